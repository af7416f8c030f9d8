// The search core: bitset domains, binary supports + clauses, FC/MAC, 2-way branching, dom/wdeg & co.
//
// A line-by-line port of the pure-Python core (tests/reference/py_solver.py): same propagation queue
// discipline (a stack, a variable queued at most once), same constraint order, same tie-breaking, same
// counters, so the search trees are identical (tests/unit/test_native_golden.py holds it to that).
// It knows nothing of Python: callbacks (tracer, learned policy) come in through the Hooks interface.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "policy.hpp"

namespace rp {

using Word = std::uint64_t;

// The immutable part of a solver, built once per instance and shared by every solver on it (probes).
struct Compiled {
    int n = 0;
    int W = 1;                      // 64-bit words per domain
    std::vector<Word> init_dom;     // n*W
    std::vector<int> size;          // per variable: highest initial value + 1 (rows of its support tables)
    // arcs of x: [arc_start[x], arc_start[x+1]); arc e: neighbour, constraint id, support rows for x's values
    std::vector<int> arc_start, arc_y, arc_cid;
    std::vector<std::size_t> arc_sup;  // offset into sup_words; row a is sup_words[arc_sup[e] + a*W ...]
    std::vector<Word> sup_words;
    std::vector<int> bin_arc;       // constraint id -> the arc (x -> y) of its first variable (for checking)
    std::vector<int> arc_x;         // arc -> its first variable (filled by finish())
    // arc e (x -> y): the most values of x's initial domain that a single value of y's initial domain conflicts
    // with (filled by finish()). While x keeps more values than that, every value of y keeps a support in x, so
    // revising e cannot change y: the revision is skipped (counted all the same).
    std::vector<int> arc_maxc;
    // One word per domain (W == 1) only, for the arcs x -> y with size[x] <= kNibSize (filled by finish()): arc
    // e's support rows as nibble tables, so that the union of the rows of a set of x's values takes one lookup
    // per 4 values (at most 4) instead of one per value. Table t (values 4t .. 4t+3) of arc e is
    // nib[arc_nib[e] + 16*t ...]; its entry m is the union of the rows of the values in m.
    static constexpr int kNibSize = 16;
    // Every binary constraint has exactly two arcs, x -> y and y -> x (filled by finish()): the core then keeps
    // each variable's sum of weights over its arcs to unfixed neighbours up to date instead of recomputing it
    // at every decision.
    bool arcs_paired = false;
    std::vector<std::size_t> arc_nib;
    std::vector<Word> nib;
    // clauses: literals [clause_start[j], clause_start[j+1]) of (lit_v, lit_a); occurrences of x
    std::vector<int> clause_start, lit_v, lit_a, occ_start, occ;
    int n_bin = 0, n_cons = 0;
    std::vector<double> tightness;  // per constraint, as compile_instance computes it
    std::vector<int> static_deg, init_size;
    // Set by finish(), unique per finished instance in this process: a cache of per-instance results (the graph
    // scorer's, graph.cpp) keys on it, not on an address that a later instance may reuse.
    std::uint64_t uid = 0;

    // Checks every array against the others (std::invalid_argument on any inconsistency), then derives arc_x:
    // the arrays come from Python and are never trusted blindly.
    void finish();
};

// Column indices of the feature matrix, in the order of features.def (the one schema both sides read).
enum Feature : int {
#define FEATURE_VERSION(v)
#define CANDIDATE(name) F_##name,
#define STATE(name) F_##name,
#include "features.def"
#undef CANDIDATE
#undef STATE
#undef FEATURE_VERSION
    N_FEATURES
};
std::vector<std::string> feature_names();

enum class Heuristic { Lex, Random, Mrv, DomDeg, DomWdeg, Learned, Expert };
enum class ValueOrder { Lex, MinConflicts };

struct Options {
    Heuristic heuristic = Heuristic::DomWdeg;
    bool mac = true;
    ValueOrder value_order = ValueOrder::Lex;
    long long node_limit = -1;      // < 0: none
    double time_limit = 0.0;        // <= 0: none
    std::uint64_t seed = 0;
    int top_k = 0;                  // learned/expert: the dom/wdeg top-K candidates they choose among (0: all)
    int max_depth = -1;             // learned/expert: only at decisions up to this depth (< 0: every depth)
    double min_margin = 0.0;
    bool restarts = false;
    long long restart_base = 100;
    int first_var = -1;
    long long count_limit = 0;
    long long probe_budget = 1000;  // expert: node budget of each probe (over it: cost budget+1, censored)
    // The learned heuristic scored in the core (no Python call: the student MLP, the graph scorer); without it,
    // by Hooks::score.
    std::shared_ptr<const Policy> policy;
};

struct Stats {
    long long nodes = 0, backtracks = 0, propagations = 0, checks = 0, restarts = 0, max_depth = 0;
    double time_s = 0.0;
    double feature_time_s = 0.0;  // computing the learned heuristic's feature rows
    double policy_time_s = 0.0;   // scoring them (the native MLP, or the call out through Hooks::score)
    long long model_calls = 0;
    long long probes = 0, probe_nodes = 0;  // the expert's probes (not counted in nodes)
    double probe_time_s = 0.0;
};

// What the core calls back for: decisions (tracing) and candidate scores (the learned heuristic).
struct Hooks {
    virtual ~Hooks() = default;
    virtual bool traces() const { return false; }
    virtual long long on_decision(int /*depth*/, int /*chosen*/) { return -1; }  // token, < 0: none
    virtual void on_outcome(long long /*token*/, long long /*subtree*/, bool /*solved*/) {}
    // scores[i] for candidates[i] (best-first by dom/wdeg), given their feature rows (row-major,
    // candidates x N_FEATURES); higher = branch on it first
    virtual void score(const std::vector<int>& /*candidates*/, int /*depth*/, const std::vector<float>& /*features*/,
                       std::vector<double>& /*scores*/) {
        throw std::logic_error("learned heuristic without a policy");
    }
};

// The columns of a decision trace, and state snapshots at chosen decisions (the label step's replay).
struct Trace {
    bool on = false;
    long long max_records = -1;     // < 0: every decision
    std::vector<long long> capture;  // sorted decision indices to snapshot
    std::vector<int> depth, n_cands, chosen;
    std::vector<long long> subtree;
    std::vector<std::uint8_t> solved;
    long long count = 0;
    std::vector<long long> snap_index;
    std::vector<int> snap_depth;
    std::vector<Word> snap_dom;      // n*W per snapshot
    std::vector<long long> snap_weights;  // n_cons per snapshot
};

class SolverCore {
public:
    virtual ~SolverCore() = default;
    virtual std::string solve() = 0;  // "SAT" | "UNSAT" | "UNKNOWN"; once per solver
    virtual void set_count_limit(long long limit) = 0;  // > 0: enumerate up to this many solutions
    virtual const Stats& stats() const = 0;
    virtual long long solutions() const = 0;
    virtual const std::vector<int>& first_solution() const = 0;
    virtual const std::vector<Word>& domains() const = 0;
    virtual const std::vector<long long>& weights() const = 0;
    virtual std::vector<int> unassigned() const = 0;
    virtual std::vector<int> dom_wdeg_order(const std::vector<int>& cands) const = 0;
    virtual std::vector<bool> active_clauses() const = 0;
    virtual int first_value(int x) const = 0;
    // Feature rows (candidates x N_FEATURES, row-major) of the current state, as the learned heuristic sees them.
    virtual std::vector<float> features(const std::vector<int>& cands, int depth) const = 0;
    virtual Trace& trace() = 0;
    // Probe labels of the current state: for each candidate c, the nodes a dom/wdeg search (this solver's
    // heuristic if it is a plain one) needs to finish the subproblem with c branched on first, from these
    // domains and weights; budget+1 when it does not finish within `budget` nodes (censored). The expert
    // heuristic and the label step share this one definition.
    virtual std::vector<long long> probe_costs(const std::vector<int>& cands, long long budget) = 0;
};

std::unique_ptr<SolverCore> make_solver(std::shared_ptr<const Compiled> c, const Options& opt,
                                        const std::vector<Word>* domains, const std::vector<long long>* weights,
                                        const std::vector<int>* var_rank, const std::vector<std::vector<int>>* val_rank,
                                        Hooks* hooks);

long long luby(long long i);

}  // namespace rp
