// See core.hpp. Method names and order follow the pure-Python reference so the two read side by side.
#include "core.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <tuple>

namespace rp {

namespace {

struct LimitHit {};
struct RestartNow {};
struct Enough {};

constexpr double INF = std::numeric_limits<double>::infinity();

// Runs f on a thread with a stack of `bytes` and waits for it.
template <class F>
void run_with_stack(std::size_t bytes, F&& f) {
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) throw std::runtime_error("pthread_attr_init failed");
    pthread_attr_setstacksize(&attr, bytes);
    auto body = [](void* p) -> void* { (*static_cast<F*>(p))(); return nullptr; };
    pthread_t t;
    const int rc = pthread_create(&t, &attr, body, &f);
    pthread_attr_destroy(&attr);
    if (rc != 0) throw std::runtime_error("cannot start the search thread (pthread_create: " + std::to_string(rc) + ")");
    pthread_join(t, nullptr);
}

double now_s() {
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// splitmix64: the "random" heuristic's source (seeded, reproducible; not Python's Mersenne Twister)
std::uint64_t splitmix(std::uint64_t& s) {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// W_, the words per domain: a compile-time constant when FW > 0 (every loop over words unrolls), else read from
// Compiled.
template <int FW>
struct Words {
    explicit Words(int) {}
    static constexpr int W_ = FW;
};
template <>
struct Words<0> {
    explicit Words(int w) : W_(w) {}
    const int W_;
};

// FW = words per domain known at compile time (1: every domain fits 64 values), or 0: read from Compiled.
template <int FW>
class Core final : public SolverCore, private Words<FW> {
    using Words<FW>::W_;

public:
    Core(std::shared_ptr<const Compiled> c, const Options& opt, const std::vector<Word>* domains,
         const std::vector<long long>* weights, const std::vector<int>* var_rank,
         const std::vector<std::vector<int>>* val_rank, Hooks* hooks)
        : Words<FW>(c->W), c_(std::move(c)), cc_(*c_), o_(opt), hooks_(hooks), n_(cc_.n), rng_(opt.seed) {
        const std::size_t nw = static_cast<std::size_t>(n_) * W_;
        if (domains) {
            if (domains->size() != nw) throw std::invalid_argument(std::to_string(domains->size() / W_) +
                                                                   " domains for " + std::to_string(n_) + " variables");
            dom_ = *domains;
            // A state's domains must lie inside the instance's: support rows exist only for those values.
            for (std::size_t i = 0; i < nw; ++i)
                if (dom_[i] & ~cc_.init_dom[i])
                    throw std::invalid_argument("domain of variable " + std::to_string(i / W_) +
                                                " has values outside the instance's domain");
            // An empty domain is a wiped-out state, never a decision state: refuse it (propagation reads a
            // support row per value and has none to read).
            const int v = first_empty();
            if (v >= 0) throw std::invalid_argument("domain of variable " + std::to_string(v) + " is empty");
        } else {
            dom_ = cc_.init_dom;
        }
        if (weights) {
            if (static_cast<int>(weights->size()) != cc_.n_cons)
                throw std::invalid_argument(std::to_string(weights->size()) + " weights for " +
                                            std::to_string(cc_.n_cons) + " constraints");
            w_ = *weights;
        } else {
            w_.assign(cc_.n_cons, 1);
        }
        rank_.resize(n_);
        if (var_rank) {
            if (static_cast<int>(var_rank->size()) != n_) throw std::invalid_argument("var_rank must have one entry per variable");
            rank_ = *var_rank;
        } else {
            for (int v = 0; v < n_; ++v) rank_[v] = v;
        }
        if (val_rank) {
            if (static_cast<int>(val_rank->size()) != n_) throw std::invalid_argument("val_rank must have one row per variable");
            for (int v = 0; v < n_; ++v)
                if (static_cast<int>((*val_rank)[v].size()) < cc_.size[v])
                    throw std::invalid_argument("val_rank row " + std::to_string(v) + " is shorter than the domain");
            val_rank_ = *val_rank;
            has_val_rank_ = true;
        }
        if (o_.first_var >= n_) throw std::invalid_argument("first_var out of range");
        if (o_.heuristic == Heuristic::Learned && !hooks_ && !o_.policy)
            throw std::invalid_argument("heuristic 'learned' needs a policy");
        if (o_.policy && o_.policy->inputs() != N_FEATURES)
            throw std::invalid_argument("the policy takes " + std::to_string(o_.policy->inputs()) + " features, the core has " +
                                        std::to_string(int(N_FEATURES)));
        if (o_.policy) o_.policy->check_instance(cc_);
        inq_.assign(n_, 0);
        if (track_) {
            wsum_.assign(n_, 0);
            for (int x = 0; x < n_; ++x)
                for (int e = cc_.arc_start[x]; e < cc_.arc_start[x + 1]; ++e)
                    if (multi(cc_.arc_y[e])) wsum_[x] += w_[cc_.arc_cid[e]];
        }
    }

    void set_count_limit(long long limit) override { o_.count_limit = limit; }

    std::string solve() override {
        if (solved_) throw std::logic_error("solve() called twice on one solver");
        solved_ = true;
        // Search recurses once per positive decision (at most n deep): give big instances a stack to match. A
        // probe runs inside its parent's search (up to 2n frames on one stack): it gets its own above half the limit.
        const std::size_t need = static_cast<std::size_t>(n_) * 1024 + (std::size_t(8) << 20);
        if (n_ <= (nested_ ? kMainStackVars / 2 : kMainStackVars)) return solve_here();
        std::string status;
        std::exception_ptr error;
        run_with_stack(need, [&] {
            try { status = solve_here(); } catch (...) { error = std::current_exception(); }
        });
        if (error) std::rethrow_exception(error);
        return status;
    }

private:
    static constexpr int kMainStackVars = 4000;  // 4k frames fit any default thread stack (>= 1 MiB) easily
    bool solved_ = false;
    bool nested_ = false;  // a probe of another solver's search

    int first_empty() const {
        for (int v = 0; v < n_; ++v) {
            Word any = 0;
            for (int k = 0; k < W_; ++k) any |= dom_[static_cast<std::size_t>(v) * W_ + k];
            if (!any) return v;
        }
        return -1;
    }

    // The search's deadline while it runs; none before or after (probe_costs from a finished solver's state
    // must not inherit a deadline that has passed).
    struct Deadline {
        double& d;
        Deadline(double& slot, double value) : d(slot) { d = value; }
        ~Deadline() { d = INF; }
    };

    std::string solve_here() {
        const double t0 = now_s();
        const Deadline running(deadline_, o_.time_limit > 0 ? t0 + o_.time_limit : INF);
        std::string status = "UNKNOWN";
        try {
            std::vector<int> all(n_);
            for (int v = 0; v < n_; ++v) all[v] = v;
            // An instance with an empty domain (states with one are refused above) has no solution; propagation
            // assumes every domain has a value.
            if (first_empty() >= 0 || !propagate(all)) {
                status = "UNSAT";
            } else {
                const std::size_t root = trail_var_.size();
                long long restart_i = 1;
                bool found = false;
                while (true) {
                    if (o_.restarts) fails_to_restart_ = st_.backtracks + o_.restart_base * luby(restart_i);
                    try {
                        found = search(0);
                        break;
                    } catch (const RestartNow&) {
                        undo(root);
                        ++st_.restarts;
                        ++restart_i;
                    }
                }
                if (found) status = "SAT";
                else if (o_.count_limit) status = solutions_ ? "SAT" : "UNSAT";
                else status = "UNSAT";
            }
        } catch (const LimitHit&) {
            status = solutions_ ? "SAT" : "UNKNOWN";
        } catch (const Enough&) {
            status = "SAT";
        }
        st_.time_s = now_s() - t0;
        return status;
    }

public:
    const Stats& stats() const override { return st_; }
    long long solutions() const override { return solutions_; }
    const std::vector<int>& first_solution() const override { return first_; }
    const std::vector<Word>& domains() const override { return dom_; }
    const std::vector<long long>& weights() const override { return w_; }
    Trace& trace() override { return tr_; }

    std::vector<int> unassigned() const override {
        std::vector<int> out;
        for (int v = 0; v < n_; ++v)
            if (multi(v)) out.push_back(v);
        return out;
    }

    std::vector<bool> active_clauses() const override {
        const int nc = static_cast<int>(cc_.clause_start.size()) - 1;
        std::vector<bool> out(std::max(0, nc), true);
        for (int j = 0; j < nc; ++j)
            for (int l = cc_.clause_start[j]; l < cc_.clause_start[j + 1]; ++l)
                if (is_exactly(cc_.lit_v[l], cc_.lit_a[l])) { out[j] = false; break; }
        return out;
    }

    std::vector<int> dom_wdeg_order(const std::vector<int>& cands) const override {
        for (int x : cands) in_range(x);
        std::vector<int> out;
        std::vector<std::tuple<double, int, int>> keyed;  // not the search's buffer: Python may call this mid-solve
        dom_wdeg_top(cands, 0, out, keyed);
        return out;
    }

    // The first k of cands by dom/wdeg (ties: rank; k <= 0: all of them), in order. (dom/wdeg, rank, x) is a
    // total order, so a partial sort gives the same first k as a full one.
    void dom_wdeg_top(const std::vector<int>& cands, int k, std::vector<int>& out,
                      std::vector<std::tuple<double, int, int>>& keyed) const {
        std::vector<bool> active;
        const std::vector<bool>* act = nullptr;
        if (has_clauses()) { active = active_clauses(); act = &active; }
        keyed.clear();
        for (int x : cands) {
            const long long wd = wdeg_of(x, true, act);
            keyed.emplace_back(wd ? double(popcount(x)) / double(wd) : INF, rank_[x], x);
        }
        const std::size_t m = k > 0 ? std::min(keyed.size(), static_cast<std::size_t>(k)) : keyed.size();
        std::partial_sort(keyed.begin(), keyed.begin() + static_cast<std::ptrdiff_t>(m), keyed.end());
        out.clear();
        for (std::size_t i = 0; i < m; ++i) out.push_back(std::get<2>(keyed[i]));
    }

    int first_value(int x) const override { return value(in_range(x)); }

    std::vector<long long> probe_costs(const std::vector<int>& cands, long long budget) override {
        for (int x : cands) in_range(x);
        if (budget < 0) throw std::invalid_argument("probe budget must be >= 0");
        Options po;
        const bool plain = o_.heuristic != Heuristic::Learned && o_.heuristic != Heuristic::Expert;
        po.heuristic = plain ? o_.heuristic : Heuristic::DomWdeg;
        po.mac = o_.mac;
        po.value_order = o_.value_order;
        po.seed = o_.seed;
        po.node_limit = budget;
        // Within a search with a time limit the probes share it: the search stops at its next node anyway.
        if (deadline_ < INF) po.time_limit = std::max(1e-6, deadline_ - now_s());
        std::vector<long long> costs;
        costs.reserve(cands.size());
        for (int c : cands) {
            po.first_var = c;
            Core<FW> probe(c_, po, &dom_, &w_, &rank_, has_val_rank_ ? &val_rank_ : nullptr, nullptr);
            probe.nested_ = true;
            const double t0 = now_s();
            const bool done = probe.solve() != "UNKNOWN";
            costs.push_back(done ? probe.stats().nodes : budget + 1);
            ++st_.probes;
            st_.probe_nodes += probe.stats().nodes;
            st_.probe_time_s += now_s() - t0;
        }
        return costs;
    }

    // A port of the pure-Python feature code (tests/reference/py_features.py), operation for operation in
    // double precision, so both give the same float32 values (tests/unit/test_native_features.py).
    std::vector<float> features(const std::vector<int>& cands, int depth) const override {
        for (int x : cands) in_range(x);
        const int k = static_cast<int>(cands.size());
        std::vector<float> out(static_cast<std::size_t>(k) * N_FEATURES, 0.0f);
        if (!k) return out;
        std::vector<bool> active;
        const std::vector<bool>* act = nullptr;
        if (has_clauses()) { active = active_clauses(); act = &active; }
        std::vector<Raw> raws(k);
        for (int i = 0; i < k; ++i) raws[i] = raw_candidate(cands[i], act);
        std::vector<double> dw(k);
        double best_dw = INF;
        long long min_dom = raws[0].d, max_w = 0, max_dd = 0, total_w = 0;
        for (int i = 0; i < k; ++i) {
            const Raw& r = raws[i];
            dw[i] = r.wdeg ? double(r.d) / double(r.wdeg) : double(r.d) * 2.0;
            best_dw = std::min(best_dw, dw[i]);
            min_dom = std::min(min_dom, r.d);
            max_w = std::max(max_w, r.wdeg);
            max_dd = std::max(max_dd, r.ddeg);
            total_w += r.wdeg;
        }
        if (!max_w) max_w = 1;
        if (!max_dd) max_dd = 1;
        if (!total_w) total_w = 1;
        std::vector<int> order(k);
        for (int i = 0; i < k; ++i) order[i] = i;
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
            return dw[a] < dw[b] || (dw[a] == dw[b] && rank_[cands[a]] < rank_[cands[b]]);
        });
        std::vector<int> pos_of(k);
        for (int p = 0; p < k; ++p) pos_of[order[p]] = p;
        double state[N_FEATURES] = {};
        state_features(depth, k, state);
        const double n1 = std::max(1, n_ - 1), km1 = std::max(1, k - 1);
        for (int i = 0; i < k; ++i) {
            const Raw& r = raws[i];
            const int x = cands[i];
            const double d = double(r.d), ddeg = double(r.ddeg), wdeg = double(r.wdeg);
            const int n_nbr = cc_.arc_start[x + 1] - cc_.arc_start[x];
            double row[N_FEATURES];
            std::copy(state, state + N_FEATURES, row);
            row[F_log_dom] = std::log1p(d);
            row[F_dom_rel] = d / double(cc_.init_size[x]);
            row[F_log_ddeg] = std::log1p(ddeg);
            row[F_log_wdeg] = std::log1p(wdeg);
            row[F_log_dom_wdeg] = std::log1p(dw[i]);
            row[F_log_dom_ddeg] = std::log1p(r.ddeg ? d / ddeg : d * 2.0);
            row[F_static_deg_rel] = double(cc_.static_deg[x]) / n1;
            row[F_wdeg_share] = wdeg / double(total_w);
            row[F_dom_wdeg_vs_best] = best_dw > 0 ? dw[i] / best_dw : 1.0;
            row[F_dom_vs_min] = d / double(min_dom);
            row[F_wdeg_vs_max] = wdeg / double(max_w);
            row[F_ddeg_vs_max] = ddeg / double(max_dd);
            row[F_nbr_assigned_frac] = n_nbr ? double(r.assigned) / double(n_nbr) : 1.0;
            row[F_nbr_pressure] = r.ddeg ? r.pressure / ddeg : 0.0;
            row[F_mean_tightness] = r.ddeg ? r.tsum / ddeg : 0.0;
            row[F_min_clause_open] = r.min_open ? 1.0 / double(r.min_open) : 0.0;
            row[F_jw_score] = r.jw;
            row[F_polarity_balance] = r.pos + r.neg ? double(std::llabs(r.pos - r.neg)) / double(r.pos + r.neg) : 0.0;
            row[F_order_pos] = double(pos_of[i]) / km1;
            row[F_la_prune_frac] = r.total ? double(r.removed) / double(r.total) : 0.0;
            row[F_la_wipeout] = double(r.wipe);
            row[F_la_min_left] = r.min_left;
            row[F_la_units] = r.n_act ? double(r.units) / double(r.n_act) : 0.0;
            row[F_la_conflict] = double(r.conflict);
            row[F_la_sat_frac] = r.n_act ? double(r.sat) / double(r.n_act) : 0.0;
            float* o = out.data() + static_cast<std::size_t>(i) * N_FEATURES;
            for (int f = 0; f < N_FEATURES; ++f) o[f] = static_cast<float>(row[f]);
        }
        return out;
    }

private:
    std::shared_ptr<const Compiled> c_;
    const Compiled& cc_;
    Options o_;
    Hooks* hooks_;
    const int n_;
    std::vector<Word> dom_;
    std::vector<long long> w_;
    std::vector<int> rank_;
    std::vector<std::vector<int>> val_rank_;
    bool has_val_rank_ = false;
    std::vector<int> trail_var_;
    std::vector<Word> trail_dom_;
    std::vector<std::uint8_t> inq_;
    std::vector<int> queue_;
    Stats st_;
    long long solutions_ = 0;
    std::vector<int> first_;
    double deadline_ = INF;
    long long fails_to_restart_ = std::numeric_limits<long long>::max();
    std::uint64_t rng_;
    Trace tr_;
    std::vector<Word> u_;  // scratch: union of supports
    // wsum_[x] = the sum of w_[cid] over x's arcs (x -> y, cid) with y unfixed: wdeg()'s binary part, kept up to
    // date as domains and weights change (needs Compiled::arcs_paired).
    const bool track_ = cc_.arcs_paired;
    std::vector<long long> wsum_;

    int in_range(int x) const {
        if (x < 0 || x >= n_) throw std::out_of_range("variable " + std::to_string(x) + " out of range");
        return x;
    }

    // ------------------------------------------------------------------ domains
    Word* d(int v) { return dom_.data() + static_cast<std::size_t>(v) * W_; }
    const Word* d(int v) const { return dom_.data() + static_cast<std::size_t>(v) * W_; }
    const Word* sup_row(int e, int a) const {
        return cc_.sup_words.data() + cc_.arc_sup[e] + static_cast<std::size_t>(a) * W_;
    }
    bool has_clauses() const { return cc_.clause_start.size() > 1; }

    int popcount(int v) const {
        const Word* p = d(v);
        int s = 0;
        for (int k = 0; k < W_; ++k) s += __builtin_popcountll(p[k]);
        return s;
    }
    bool multi(int v) const {  // two or more values left
        const Word* p = d(v);
        if (FW == 1) return (p[0] & (p[0] - 1)) != 0;
        int seen = 0;
        for (int k = 0; k < W_; ++k) {
            if (!p[k]) continue;
            if (p[k] & (p[k] - 1)) return true;
            if (++seen > 1) return true;
        }
        return false;
    }
    bool has(int v, int a) const {
        if (a < 0 || a >= 64 * W_) return false;
        return (d(v)[a >> 6] >> (a & 63)) & 1;
    }
    bool is_exactly(int v, int a) const { return has(v, a) && !multi(v); }
    int lowest(const Word* p) const {
        for (int k = 0; k < W_; ++k)
            if (p[k]) return 64 * k + __builtin_ctzll(p[k]);
        return -1;
    }
    int highest(const Word* p) const {
        for (int k = W_ - 1; k >= 0; --k)
            if (p[k]) return 64 * k + 63 - __builtin_clzll(p[k]);
        return -1;
    }

    void save(int v) {
        trail_var_.push_back(v);
        const Word* p = d(v);
        if constexpr (FW == 1) trail_dom_.push_back(p[0]);
        else trail_dom_.insert(trail_dom_.end(), p, p + W_);
    }
    void set_single(int v, int a) {
        const bool was = multi(v);
        save(v);
        Word* p = d(v);
        for (int k = 0; k < W_; ++k) p[k] = 0;
        p[a >> 6] = Word(1) << (a & 63);
        if (was) fixed(v, -1);
    }
    void remove_value(int v, int a) {
        const bool was = multi(v);
        save(v);
        d(v)[a >> 6] &= ~(Word(1) << (a & 63));
        if (was && !multi(v)) fixed(v, -1);
    }
    void undo(std::size_t mark) {
        while (trail_var_.size() > mark) {
            const int v = trail_var_.back();
            trail_var_.pop_back();
            Word* p = d(v);
            const bool was = multi(v);
            const std::size_t off = trail_dom_.size() - W_;
            for (int k = 0; k < W_; ++k) p[k] = trail_dom_[off + k];
            trail_dom_.resize(off);
            if (!was && multi(v)) fixed(v, +1);
        }
    }
    // v became fixed (sign -1) or unfixed again (+1): its neighbours' wsum_ lose or regain their arcs to v.
    void fixed(int v, int sign) {
        if (!track_) return;
        for (int e = cc_.arc_start[v]; e < cc_.arc_start[v + 1]; ++e) wsum_[cc_.arc_y[e]] += sign * w_[cc_.arc_cid[e]];
    }
    // the constraint of arc e (x -> y) failed: its weight grows by one, and so does wsum_ of each end whose
    // other end is unfixed.
    void bump(int e) {
        ++w_[cc_.arc_cid[e]];
        if (!track_) return;
        const int x = cc_.arc_x[e], y = cc_.arc_y[e];
        wsum_[x] += multi(y);
        wsum_[y] += multi(x);
    }

    // ------------------------------------------------------------------ propagation
    void push(int v) {
        if (!inq_[v]) { queue_.push_back(v); inq_[v] = 1; }
    }
    bool fail() {
        for (int v : queue_) inq_[v] = 0;
        queue_.clear();
        return false;
    }

    bool propagate(const std::vector<int>& start) {
        queue_.clear();
        for (int v : start) { queue_.push_back(v); inq_[v] = 1; }
        return run_queue();
    }
    bool propagate1(int x) {
        queue_.clear();
        queue_.push_back(x);
        inq_[x] = 1;
        return run_queue();
    }

    bool run_queue() {
        u_.resize(W_);
        while (!queue_.empty()) {
            const int x = queue_.back();
            queue_.pop_back();
            inq_[x] = 0;
            ++st_.propagations;
            const bool single = !multi(x);
            if (o_.mac || single) {
                const Word* dx = d(x);
                const int ax = single ? lowest(dx) : -1;
                const int nx = popcount(x);
                const bool by_nib = FW == 1 && cc_.size[x] <= Compiled::kNibSize;  // see Compiled::nib
                for (int e = cc_.arc_start[x]; e < cc_.arc_start[x + 1]; ++e) {
                    const int y = cc_.arc_y[e];
                    if (nx > cc_.arc_maxc[e]) {  // every value of y keeps a support (Compiled::arc_maxc)
                        st_.checks += multi(y) || inq_[y];  // a revision, unless skipped as below
                        continue;
                    }
                    if (!multi(y) && !inq_[y]) continue;  // see the reference: its support cannot be lost
                    if constexpr (FW == 1) {  // one word: the union stays in a register
                        const Word* rows = cc_.sup_words.data() + cc_.arc_sup[e];
                        Word u = 0;
                        if (single) {
                            u = rows[ax];
                        } else if (by_nib) {
                            const Word* t = cc_.nib.data() + cc_.arc_nib[e];
                            for (Word m = dx[0]; m; m >>= 4, t += 16) u |= t[m & 15];
                        } else {
                            for (Word m = dx[0]; m; m &= m - 1) u |= rows[__builtin_ctzll(m)];
                        }
                        ++st_.checks;
                        Word* dy = d(y);
                        const Word ny = dy[0] & u;
                        if (ny != dy[0]) {
                            if (!ny) {
                                bump(e);
                                return fail();
                            }
                            save(y);
                            dy[0] = ny;
                            if (!(ny & (ny - 1))) fixed(y, -1);  // y had two values or more (else ny = 0)
                            push(y);
                        }
                        continue;
                    }
                    const Word* u;
                    if (single) {
                        u = sup_row(e, ax);
                    } else {
                        for (int k = 0; k < W_; ++k) u_[k] = 0;
                        for (int k = 0; k < W_; ++k) {
                            Word m = dx[k];
                            while (m) {
                                const int a = 64 * k + __builtin_ctzll(m);
                                m &= m - 1;
                                const Word* s = sup_row(e, a);
                                for (int q = 0; q < W_; ++q) u_[q] |= s[q];
                            }
                        }
                        u = u_.data();
                    }
                    ++st_.checks;
                    Word* dy = d(y);
                    bool changed = false, empty = true;
                    for (int k = 0; k < W_; ++k) {
                        const Word ny = dy[k] & u[k];
                        changed |= ny != dy[k];
                        empty &= ny == 0;
                    }
                    if (changed) {
                        if (empty) {
                            bump(e);
                            return fail();
                        }
                        save(y);
                        for (int k = 0; k < W_; ++k) dy[k] &= u[k];
                        if (!multi(y)) fixed(y, -1);  // y had two values or more (else it would be empty)
                        push(y);
                    }
                }
            }
            for (int o = cc_.occ_start[x]; o < cc_.occ_start[x + 1]; ++o) {
                const int j = cc_.occ[o];
                ++st_.checks;
                int n_open = 0, lv = -1, la = -1;
                bool satisfied = false;
                for (int l = cc_.clause_start[j]; l < cc_.clause_start[j + 1]; ++l) {
                    const int v = cc_.lit_v[l], a = cc_.lit_a[l];
                    if (has(v, a)) {
                        if (!multi(v)) { satisfied = true; break; }
                        ++n_open;
                        lv = v;
                        la = a;
                    }
                }
                if (satisfied) continue;
                if (n_open == 0) {
                    ++w_[cc_.n_bin + j];
                    return fail();
                }
                if (n_open == 1) {
                    set_single(lv, la);
                    push(lv);
                }
            }
        }
        return true;
    }

    // ------------------------------------------------------------------ features
    struct Raw {
        long long d = 0, ddeg = 0, wdeg = 0, assigned = 0, removed = 0, total = 0, wipe = 0;
        double pressure = 0.0, tsum = 0.0, min_left = 1.0, jw = 0.0;
        long long min_open = 0, pos = 0, neg = 0, units = 0, conflict = 0, sat = 0, n_act = 0;
    };

    Raw raw_candidate(int x, const std::vector<bool>* active) const {
        Raw r;
        r.d = popcount(x);
        const int a0 = value(x);  // the value the search tries first
        for (int e = cc_.arc_start[x]; e < cc_.arc_start[x + 1]; ++e) {
            const int y = cc_.arc_y[e];
            if (!multi(y)) { ++r.assigned; continue; }
            const long long c = popcount(y);
            ++r.ddeg;
            r.wdeg += w_[cc_.arc_cid[e]];
            r.pressure += 1.0 / double(c);
            r.tsum += cc_.tightness[cc_.arc_cid[e]];
            const Word* dy = d(y);
            const Word* s = sup_row(e, a0);
            long long left = 0;
            for (int q = 0; q < W_; ++q) left += __builtin_popcountll(dy[q] & s[q]);
            r.removed += c - left;
            r.total += c;
            if (left == 0) r.wipe = 1;
            else if (double(left) / double(c) < r.min_left) r.min_left = double(left) / double(c);
        }
        if (active) {
            for (int o = cc_.occ_start[x]; o < cc_.occ_start[x + 1]; ++o) {
                const int j = cc_.occ[o];
                if (!(*active)[j]) continue;
                ++r.n_act;
                ++r.ddeg;
                r.wdeg += w_[cc_.n_bin + j];
                r.tsum += cc_.tightness[cc_.n_bin + j];
                long long n_open = 0, lost = 0;
                bool satisfied = false;
                for (int l = cc_.clause_start[j]; l < cc_.clause_start[j + 1]; ++l) {
                    const int v = cc_.lit_v[l], a = cc_.lit_a[l];
                    if (has(v, a)) {
                        ++n_open;
                        if (v == x) {
                            if (a == a0) satisfied = true;
                            else ++lost;
                        }
                    }
                    if (v == x) {
                        if (a) ++r.pos;
                        else ++r.neg;
                    }
                }
                r.jw += std::ldexp(1.0, -static_cast<int>(n_open));
                if (!r.min_open || n_open < r.min_open) r.min_open = n_open;
                if (satisfied) ++r.sat;
                else if (n_open - lost == 0) r.conflict = 1;
                else if (n_open - lost == 1) ++r.units;
            }
        }
        return r;
    }

    void state_features(int depth, int n_cands, double* out) const {
        int n_un = 0;
        double rel = 0.0;
        for (int v = 0; v < n_; ++v)
            if (multi(v)) {
                ++n_un;
                rel += double(popcount(v)) / double(cc_.init_size[v]);
            }
        long long wsum = 0;
        for (long long w : w_) wsum += w;
        int max_init = 2;
        for (int s : cc_.init_size) max_init = std::max(max_init, s);
        const double n = double(n_);
        out[F_depth_rel] = double(depth) / n;
        out[F_assigned_frac] = 1.0 - double(n_un) / n;
        out[F_mean_dom_rel] = n_un ? rel / double(n_un) : 0.0;
        out[F_log_conflicts] = std::log1p(double(wsum - cc_.n_cons));
        out[F_cands_rel] = double(n_cands) / n;
        out[F_is_clausal] = has_clauses() ? 1.0 : 0.0;
        out[F_log_n] = std::log(n);
        out[F_log_max_dom] = std::log(double(max_init));
        out[F_log_n_cons] = std::log1p(double(cc_.n_cons));
    }

    // ------------------------------------------------------------------ heuristics
    long long wdeg(int x, const std::vector<bool>* active, bool weighted) const {
        long long s = 0;
        for (int e = cc_.arc_start[x]; e < cc_.arc_start[x + 1]; ++e)
            if (multi(cc_.arc_y[e])) s += weighted ? w_[cc_.arc_cid[e]] : 1;
        if (active)
            for (int o = cc_.occ_start[x]; o < cc_.occ_start[x + 1]; ++o) {
                const int j = cc_.occ[o];
                if ((*active)[j]) s += weighted ? w_[cc_.n_bin + j] : 1;
            }
        return s;
    }

    // wdeg(), from the sums kept up to date where there are some
    long long wdeg_of(int v, bool weighted, const std::vector<bool>* act) const {
        return weighted && track_ ? wsum_[v] + clause_wdeg(v, act) : wdeg(v, act, weighted);
    }

    // wdeg()'s clause part (weighted)
    long long clause_wdeg(int x, const std::vector<bool>* active) const {
        long long s = 0;
        if (active)
            for (int o = cc_.occ_start[x]; o < cc_.occ_start[x + 1]; ++o) {
                const int j = cc_.occ[o];
                if ((*active)[j]) s += w_[cc_.n_bin + j];
            }
        return s;
    }

    int select(int depth) {
        std::vector<int>& cands = cands_;
        cands.clear();
        for (int v = 0; v < n_; ++v)
            if (multi(v)) cands.push_back(v);
        if (cands.empty()) return -1;
        if (o_.first_var >= 0 && depth == 0 && st_.nodes == 0)
            if (std::find(cands.begin(), cands.end(), o_.first_var) != cands.end()) return o_.first_var;
        switch (o_.heuristic) {
            case Heuristic::Lex: {
                int best = cands[0];
                for (int v : cands) if (rank_[v] < rank_[best]) best = v;
                return best;
            }
            case Heuristic::Random:
                return cands[splitmix(rng_) % cands.size()];
            case Heuristic::Mrv: {
                int best = -1, bp = 0;
                for (int v : cands) {
                    const int p = popcount(v);
                    if (best < 0 || p < bp || (p == bp && rank_[v] < rank_[best])) { best = v; bp = p; }
                }
                return best;
            }
            case Heuristic::DomDeg:
                return best_ratio(cands, false);
            case Heuristic::Learned:
                if (cands.size() > 1 && (o_.max_depth < 0 || depth <= o_.max_depth)) return select_learned(cands, depth);
                return best_ratio(cands, true);  // dom/wdeg below max_depth
            case Heuristic::Expert:
                if (cands.size() > 1 && (o_.max_depth < 0 || depth <= o_.max_depth)) return select_expert(cands);
                return best_ratio(cands, true);
            case Heuristic::DomWdeg:
            default:
                return best_ratio(cands, true);
        }
    }
    std::vector<int> cands_;

    int best_ratio(const std::vector<int>& cands, bool weighted) const {
        std::vector<bool> active;
        const std::vector<bool>* act = nullptr;
        if (has_clauses()) { active = active_clauses(); act = &active; }
        int best = -1;
        double bk = 0;
        for (int v : cands) {
            const long long dd = wdeg_of(v, weighted, act);
            const double k = dd ? double(popcount(v)) / double(dd) : INF;
            if (best < 0 || k < bk || (k == bk && rank_[v] < rank_[best])) { best = v; bk = k; }
        }
        return best;
    }

    int select_learned(const std::vector<int>& cands, int depth) {
        std::vector<int>& top = top_;
        dom_wdeg_top(cands, o_.top_k, top, keyed_);
        std::vector<double>& scores = scores_;
        scores.assign(top.size(), 0.0);
        const double t0 = now_s();
        const std::vector<float> feats = features(top, depth);
        st_.feature_time_s += now_s() - t0;
        ++st_.model_calls;
        const double t1 = now_s();
        if (o_.policy)
            o_.policy->score_state(PolicyState{cc_, dom_.data(), w_.data()}, top, feats.data(), scores.data());
        else
            hooks_->score(top, depth, feats, scores);
        st_.policy_time_s += now_s() - t1;
        if (scores.size() != top.size()) throw std::runtime_error("policy returned the wrong number of scores");
        std::size_t best = 0;
        for (std::size_t i = 1; i < top.size(); ++i)
            if (scores[i] > scores[best]) best = i;  // first maximum: ties keep the dom/wdeg order
        // Overrule dom/wdeg only on a clear gap (see Solver(min_margin=...)).
        if (best && scores[best] - scores[0] <= o_.min_margin) return top[0];
        return top[best];
    }

    // select_learned's buffers, reused from decision to decision (one search runs on one thread at a time)
    std::vector<int> top_;
    std::vector<double> scores_;
    std::vector<std::tuple<double, int, int>> keyed_;

    // The labeller run online: probe the dom/wdeg top-K, branch on the cheapest (ties: dom/wdeg order).
    int select_expert(const std::vector<int>& cands) {
        std::vector<int> top;
        std::vector<std::tuple<double, int, int>> keyed;
        dom_wdeg_top(cands, o_.top_k, top, keyed);
        const std::vector<long long> costs = probe_costs(top, o_.probe_budget);
        std::size_t best = 0;
        for (std::size_t i = 1; i < top.size(); ++i)
            if (costs[i] < costs[best]) best = i;
        return top[best];
    }

    int value(int x) const {
        const Word* p = d(x);
        if (o_.value_order == ValueOrder::Lex && !has_val_rank_) return lowest(p);
        std::vector<int> vals;
        for (int k = 0; k < W_; ++k) {
            Word m = p[k];
            while (m) { vals.push_back(64 * k + __builtin_ctzll(m)); m &= m - 1; }
        }
        if (o_.value_order == ValueOrder::MinConflicts) {
            int best = -1;
            long long bc = 0, br = 0;
            for (int a : vals) {
                long long conflicts = 0;
                for (int e = cc_.arc_start[x]; e < cc_.arc_start[x + 1]; ++e) {
                    const int y = cc_.arc_y[e];
                    if (!multi(y)) continue;
                    const Word* dy = d(y);
                    const bool row = a < cc_.size[x];
                    const Word* s = row ? sup_row(e, a) : nullptr;
                    for (int k = 0; k < W_; ++k) conflicts += __builtin_popcountll(dy[k] & ~(row ? s[k] : Word(0)));
                }
                for (int o = cc_.occ_start[x]; o < cc_.occ_start[x + 1]; ++o) {
                    const int j = cc_.occ[o];
                    for (int l = cc_.clause_start[j]; l < cc_.clause_start[j + 1]; ++l)
                        if (cc_.lit_v[l] == x && cc_.lit_a[l] == a) --conflicts;
                }
                const long long r = has_val_rank_ ? val_rank_[x][a] : a;
                if (best < 0 || conflicts < bc || (conflicts == bc && r < br)) { best = a; bc = conflicts; br = r; }
            }
            return best;
        }
        int best = vals[0];
        for (int a : vals) if (val_rank_[x][a] < val_rank_[x][best]) best = a;
        return best;
    }

    // ------------------------------------------------------------------ search
    long long on_decision(int depth, int x) {
        long long token = -1;
        if (tr_.on) {
            const long long idx = tr_.count++;
            if (std::binary_search(tr_.capture.begin(), tr_.capture.end(), idx)) {
                tr_.snap_index.push_back(idx);
                tr_.snap_depth.push_back(depth);
                tr_.snap_dom.insert(tr_.snap_dom.end(), dom_.begin(), dom_.end());
                tr_.snap_weights.insert(tr_.snap_weights.end(), w_.begin(), w_.end());
            }
            if (tr_.max_records < 0 || idx < tr_.max_records) {
                int nc = 0;
                for (int v = 0; v < n_; ++v) nc += multi(v);
                tr_.depth.push_back(depth);
                tr_.n_cands.push_back(nc);
                tr_.chosen.push_back(x);
                tr_.subtree.push_back(0);
                tr_.solved.push_back(0);
                token = idx;
            }
        }
        if (hooks_ && hooks_->traces()) {
            const long long t = hooks_->on_decision(depth, x);
            if (t >= 0) token = t;  // one tracer at a time (the bindings refuse both)
        }
        return token;
    }
    void on_outcome(long long token, long long subtree, bool found) {
        if (token < 0) return;
        if (tr_.on) {
            tr_.subtree[token] = subtree;
            tr_.solved[token] = found;
        } else if (hooks_) {
            hooks_->on_outcome(token, subtree, found);
        }
    }

    bool search(int depth) {
        if (depth > st_.max_depth) st_.max_depth = depth;
        while (true) {
            const int x = select(depth);
            if (x < 0) return at_leaf();
            const int a = value(x);
            ++st_.nodes;
            if (o_.node_limit >= 0 && st_.nodes > o_.node_limit) throw LimitHit{};
            if (!(st_.nodes & 63) && now_s() > deadline_) throw LimitHit{};
            const long long token = on_decision(depth, x);
            const long long before = st_.nodes;
            const std::size_t mark = trail_var_.size();
            set_single(x, a);
            const bool found = propagate1(x) && search(depth + 1);
            on_outcome(token, st_.nodes - before + 1, found);
            if (found) return true;
            undo(mark);
            ++st_.backtracks;
            if (st_.backtracks >= fails_to_restart_) throw RestartNow{};
            remove_value(x, a);
            if (!propagate1(x)) return false;
        }
    }

    bool at_leaf() {
        std::vector<int> assignment(n_);
        for (int v = 0; v < n_; ++v) assignment[v] = highest(d(v));
        check(assignment);
        ++solutions_;
        if (first_.empty()) first_ = assignment;
        if (o_.count_limit && solutions_ < o_.count_limit) return false;  // keep enumerating
        if (o_.count_limit) throw Enough{};
        return true;
    }

    // Every leaf is checked against every constraint; a violation is a bug in the core, never hidden.
    void check(const std::vector<int>& s) const {
        for (int v = 0; v < n_; ++v) {
            const Word* p = cc_.init_dom.data() + static_cast<std::size_t>(v) * W_;
            const int a = s[v];
            if (a < 0 || !((p[a >> 6] >> (a & 63)) & 1))
                throw std::logic_error("solver reached an invalid assignment: variable " + std::to_string(v));
        }
        for (int cid = 0; cid < cc_.n_bin; ++cid) {
            const int e = cc_.bin_arc[cid];
            const int x = cc_.arc_x[e], y = cc_.arc_y[e], a = s[x], b = s[y];
            if (a >= cc_.size[x] || !((sup_row(e, a)[b >> 6] >> (b & 63)) & 1))
                throw std::logic_error("solver reached an invalid assignment: binary constraint " + std::to_string(cid));
        }
        const int nc = static_cast<int>(cc_.clause_start.size()) - 1;
        for (int j = 0; j < nc; ++j) {
            bool ok = false;
            for (int l = cc_.clause_start[j]; l < cc_.clause_start[j + 1] && !ok; ++l) ok = s[cc_.lit_v[l]] == cc_.lit_a[l];
            if (!ok) throw std::logic_error("solver reached an invalid assignment: clause " + std::to_string(j));
        }
    }
};

}  // namespace

std::vector<std::string> feature_names() {
    return {
#define FEATURE_VERSION(v)
#define CANDIDATE(name) #name,
#define STATE(name) #name,
#include "features.def"
#undef CANDIDATE
#undef STATE
#undef FEATURE_VERSION
    };
}

long long luby(long long i) {
    long long k = 1;
    while ((1LL << k) - 1 < i) ++k;
    while (true) {
        if (i == (1LL << k) - 1) return 1LL << (k - 1);
        i -= (1LL << (k - 1)) - 1;
        k = 1;
        while ((1LL << k) - 1 < i) ++k;
    }
}

void Compiled::finish() {
    auto bad = [](const std::string& m) { throw std::invalid_argument("compiled instance: " + m); };
    if (n <= 0 || W <= 0) bad("no variables or no words");
    const std::size_t nw = static_cast<std::size_t>(n) * W;
    if (init_dom.size() != nw || size.size() != static_cast<std::size_t>(n)) bad("domain arrays");
    if (arc_start.size() != static_cast<std::size_t>(n) + 1 || arc_start[0] != 0) bad("arc_start");
    const std::size_t n_arcs = arc_y.size();
    if (arc_cid.size() != n_arcs || arc_sup.size() != n_arcs || static_cast<std::size_t>(arc_start[n]) != n_arcs) bad("arc arrays");
    for (int x = 0; x < n; ++x) {
        if (size[x] < 0 || size[x] > 64 * W) bad("variable size");
        // values at or past size[x] have no support rows (nor lookup tables)
        for (int k = 0; k < W; ++k) {
            const int lo = 64 * k, keep = std::max(0, std::min(64, size[x] - lo));
            const Word allowed = keep == 64 ? ~Word(0) : (Word(1) << keep) - 1;
            if (init_dom[static_cast<std::size_t>(x) * W + k] & ~allowed) bad("domain value past the variable size");
        }
        if (arc_start[x] > arc_start[x + 1]) bad("arc_start not sorted");
        for (int e = arc_start[x]; e < arc_start[x + 1]; ++e) {
            if (arc_y[e] < 0 || arc_y[e] >= n || arc_cid[e] < 0 || arc_cid[e] >= n_bin) bad("arc target");
            if (arc_sup[e] + static_cast<std::size_t>(size[x]) * W > sup_words.size()) bad("support rows");
        }
    }
    if (static_cast<int>(bin_arc.size()) != n_bin) bad("bin_arc");
    for (int e : bin_arc) if (e < 0 || static_cast<std::size_t>(e) >= n_arcs) bad("bin_arc entry");
    if (clause_start.empty() || clause_start[0] != 0) bad("clause_start");
    const int nc = static_cast<int>(clause_start.size()) - 1;
    if (n_cons != n_bin + nc) bad("n_cons");
    if (static_cast<std::size_t>(clause_start[nc]) != lit_v.size() || lit_a.size() != lit_v.size()) bad("literal arrays");
    for (int j = 0; j < nc; ++j) if (clause_start[j] > clause_start[j + 1]) bad("clause_start not sorted");
    for (std::size_t l = 0; l < lit_v.size(); ++l) if (lit_v[l] < 0 || lit_v[l] >= n || lit_a[l] < 0) bad("literal");
    if (occ_start.size() != static_cast<std::size_t>(n) + 1 || occ_start[0] != 0 ||
        static_cast<std::size_t>(occ_start[n]) != occ.size()) bad("occ arrays");
    for (int x = 0; x < n; ++x) if (occ_start[x] > occ_start[x + 1]) bad("occ_start not sorted");
    for (int j : occ) if (j < 0 || j >= nc) bad("occurrence");
    if (static_cast<int>(tightness.size()) != n_cons || static_cast<int>(static_deg.size()) != n ||
        static_cast<int>(init_size.size()) != n) bad("statistics arrays");
    arc_x.assign(n_arcs, 0);
    for (int x = 0; x < n; ++x)
        for (int e = arc_start[x]; e < arc_start[x + 1]; ++e) arc_x[e] = x;
    // arc_maxc: for each value b of y's initial domain, count the values of x's initial domain whose support row
    // lacks b (iterating over the missing bits only: loose constraints cost little); keep the maximum.
    arc_maxc.assign(n_arcs, 0);
    std::vector<int> conflicts(static_cast<std::size_t>(64) * W);
    for (int x = 0; x < n; ++x) {
        const Word* dx = init_dom.data() + static_cast<std::size_t>(x) * W;
        for (int e = arc_start[x]; e < arc_start[x + 1]; ++e) {
            const Word* dy = init_dom.data() + static_cast<std::size_t>(arc_y[e]) * W;
            std::fill(conflicts.begin(), conflicts.end(), 0);
            for (int a = 0; a < size[x]; ++a) {
                if (!((dx[a >> 6] >> (a & 63)) & 1)) continue;
                const Word* row = sup_words.data() + arc_sup[e] + static_cast<std::size_t>(a) * W;
                for (int k = 0; k < W; ++k) {
                    Word m = dy[k] & ~row[k];
                    while (m) {
                        ++conflicts[static_cast<std::size_t>(64) * k + __builtin_ctzll(m)];
                        m &= m - 1;
                    }
                }
            }
            arc_maxc[e] = *std::max_element(conflicts.begin(), conflicts.end());
            // x's own domain changes under a revision of x -> x: never skip one (the count would be stale)
            if (arc_y[e] == x) arc_maxc[e] = std::numeric_limits<int>::max();
        }
    }
    // arcs_paired: each constraint's two arcs go opposite ways
    arcs_paired = true;
    {
        std::vector<int> first(n_bin, -1), count(n_bin, 0);
        for (std::size_t e = 0; e < n_arcs; ++e) {
            const int cid = arc_cid[e];
            if (++count[cid] == 1) {
                first[cid] = static_cast<int>(e);
            } else {
                const int f = first[cid];
                if (arc_x[f] != arc_y[e] || arc_y[f] != arc_x[e]) arcs_paired = false;
            }
        }
        for (int cid = 0; cid < n_bin; ++cid)
            if (count[cid] != 2) arcs_paired = false;
    }
    arc_nib.clear();
    nib.clear();
    if (W == 1) {
        arc_nib.assign(n_arcs, 0);
        for (int x = 0; x < n; ++x) {
            if (size[x] > kNibSize) continue;  // the core takes these rows one value at a time
            for (int e = arc_start[x]; e < arc_start[x + 1]; ++e) {
                arc_nib[e] = nib.size();
                const Word* rows = sup_words.data() + arc_sup[e];
                for (int t = 0; 4 * t < size[x]; ++t)
                    for (int m = 0; m < 16; ++m) {
                        Word u = 0;
                        for (int i = 0; i < 4; ++i)
                            if (((m >> i) & 1) && 4 * t + i < size[x]) u |= rows[4 * t + i];
                        nib.push_back(u);
                    }
            }
        }
    }
    static std::atomic<std::uint64_t> next_uid{1};  // set last, once every check has passed
    uid = next_uid.fetch_add(1, std::memory_order_relaxed);
}

std::unique_ptr<SolverCore> make_solver(std::shared_ptr<const Compiled> c, const Options& opt,
                                        const std::vector<Word>* domains, const std::vector<long long>* weights,
                                        const std::vector<int>* var_rank, const std::vector<std::vector<int>>* val_rank,
                                        Hooks* hooks) {
    if (c->W == 1) return std::make_unique<Core<1>>(std::move(c), opt, domains, weights, var_rank, val_rank, hooks);
    return std::make_unique<Core<0>>(std::move(c), opt, domains, weights, var_rank, val_rank, hooks);
}

}  // namespace rp
