// Python bindings of the search core (nanobind). Thin: arrays in, counters and columns out; the Python API
// (ray_pipeline/solver/core.py) builds the arrays and wraps the results.
#include <algorithm>
#include <optional>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "core.hpp"
#include "graph.hpp"
#include "mlp.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using Matrix = nb::ndarray<nb::numpy, float, nb::ndim<2>>;

// A [rows, N_FEATURES] float32 numpy array that owns a copy of the core's feature rows.
Matrix to_numpy(const std::vector<float>& rows) {
    auto* data = new std::vector<float>(rows);
    nb::capsule owner(data, [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
    const std::size_t k = rows.size() / rp::N_FEATURES;
    return Matrix(data->data(), {k, static_cast<std::size_t>(rp::N_FEATURES)}, owner);
}

// A state handed in from Python (parity checks): sizes match the instance, values inside its domains.
void check_state(const rp::Compiled& c, const std::vector<rp::Word>& dom, const std::vector<long long>& weights) {
    if (dom.size() != static_cast<std::size_t>(c.n) * c.W) throw std::invalid_argument("domains: wrong number of words");
    if (static_cast<int>(weights.size()) != c.n_cons) throw std::invalid_argument("weights: one per constraint");
    for (std::size_t i = 0; i < dom.size(); ++i)
        if (dom[i] & ~c.init_dom[i]) throw std::invalid_argument("domains: values outside the instance's");
}

rp::Heuristic heuristic_of(const std::string& h) {
    if (h == "lex") return rp::Heuristic::Lex;
    if (h == "random") return rp::Heuristic::Random;
    if (h == "mrv") return rp::Heuristic::Mrv;
    if (h == "dom-deg") return rp::Heuristic::DomDeg;
    if (h == "dom-wdeg") return rp::Heuristic::DomWdeg;
    if (h == "learned") return rp::Heuristic::Learned;
    if (h == "expert") return rp::Heuristic::Expert;
    throw std::invalid_argument("unknown heuristic '" + h + "'");
}

// Python callbacks: a tracer (on_decision / on_outcome) and a policy (scores for candidates). solve() runs
// without the GIL (it may run on a thread of its own, see core.cpp); each callback takes it. A Python exception
// inside one propagates out of solve() as that exception.
struct PyHooks final : rp::Hooks {
    nb::object tracer, policy;
    std::vector<nb::object> tokens;

    bool traces() const override { return tracer.is_valid() && !tracer.is_none(); }
    long long on_decision(int depth, int chosen) override {
        nb::gil_scoped_acquire gil;
        nb::object t = tracer.attr("on_decision")(depth, chosen);
        if (t.is_none()) return -1;
        tokens.push_back(t);
        return static_cast<long long>(tokens.size()) - 1;
    }
    void on_outcome(long long token, long long subtree, bool solved) override {
        nb::gil_scoped_acquire gil;
        tracer.attr("on_outcome")(tokens.at(static_cast<std::size_t>(token)), subtree, solved);
    }
    void score(const std::vector<int>& candidates, int depth, const std::vector<float>& features,
               std::vector<double>& scores) override {
        nb::gil_scoped_acquire gil;
        nb::object out = policy(candidates, depth, to_numpy(features));
        std::size_t i = 0;
        for (nb::handle s : out) {
            if (i >= scores.size()) throw std::runtime_error("policy returned more scores than candidates");
            scores[i++] = nb::cast<double>(s);
        }
        if (i != scores.size()) throw std::runtime_error("policy returned fewer scores than candidates");
    }
};

class PySolver {
public:
    PySolver(std::shared_ptr<rp::Compiled> c, const std::string& heuristic, bool mac, bool min_conflicts,
             long long node_limit, double time_limit, std::uint64_t seed, int top_k, int max_depth, double min_margin,
             bool restarts, long long restart_base, int first_var, long long count_limit, long long probe_budget,
             std::optional<std::vector<rp::Word>> domains, std::optional<std::vector<long long>> weights,
             std::optional<std::vector<int>> var_rank, std::optional<std::vector<std::vector<int>>> val_rank,
             nb::object tracer, nb::object policy, std::shared_ptr<rp::Policy> native_policy) {
        rp::Options o;
        o.policy = std::move(native_policy);
        o.heuristic = heuristic_of(heuristic);
        o.mac = mac;
        o.value_order = min_conflicts ? rp::ValueOrder::MinConflicts : rp::ValueOrder::Lex;
        o.node_limit = node_limit;
        o.time_limit = time_limit;
        o.seed = seed;
        o.top_k = top_k;
        o.max_depth = max_depth;
        o.min_margin = min_margin;
        o.restarts = restarts;
        o.restart_base = restart_base;
        o.first_var = first_var;
        o.count_limit = count_limit;
        o.probe_budget = probe_budget;
        hooks_.tracer = std::move(tracer);
        hooks_.policy = std::move(policy);
        const bool has_policy = hooks_.policy.is_valid() && !hooks_.policy.is_none();
        python_calls_ = hooks_.traces() || has_policy;
        core_ = rp::make_solver(std::move(c), o, domains ? &*domains : nullptr, weights ? &*weights : nullptr,
                                var_rank ? &*var_rank : nullptr, val_rank ? &*val_rank : nullptr,
                                python_calls_ ? &hooks_ : nullptr);
    }

    std::string solve() {
        nb::gil_scoped_release release;  // other Python threads run meanwhile; callbacks take the GIL back
        return core_->solve();
    }

    void set_count_limit(long long limit) { core_->set_count_limit(limit); }

    rp::SolverCore& core() { return *core_; }

    void record_trace(long long max_records, std::vector<long long> capture) {
        if (hooks_.traces()) throw std::invalid_argument("a solver takes a Python tracer or a native trace, not both");
        auto& t = core_->trace();
        std::sort(capture.begin(), capture.end());
        t.on = true;
        t.max_records = max_records;
        t.capture = std::move(capture);
    }

private:
    PyHooks hooks_;
    bool python_calls_ = false;
    std::unique_ptr<rp::SolverCore> core_;
};

}  // namespace

NB_MODULE(ray_pipeline_native, m) {
    m.doc() = "The native search core of ray_pipeline.solver (see ray_pipeline/solver/native/core.hpp).";

    nb::class_<rp::Compiled>(m, "Compiled")
        .def("__init__",
             [](rp::Compiled* self, int n, int W, std::vector<rp::Word> init_dom, std::vector<int> size,
                std::vector<int> arc_start, std::vector<int> arc_y, std::vector<int> arc_cid,
                std::vector<std::size_t> arc_sup, std::vector<rp::Word> sup_words, std::vector<int> bin_arc,
                std::vector<int> clause_start, std::vector<int> lit_v, std::vector<int> lit_a,
                std::vector<int> occ_start, std::vector<int> occ, int n_bin, int n_cons,
                std::vector<double> tightness, std::vector<int> static_deg, std::vector<int> init_size) {
                 auto* c = new (self) rp::Compiled();
                 c->n = n;
                 c->W = W;
                 c->init_dom = std::move(init_dom);
                 c->size = std::move(size);
                 c->arc_start = std::move(arc_start);
                 c->arc_y = std::move(arc_y);
                 c->arc_cid = std::move(arc_cid);
                 c->arc_sup = std::move(arc_sup);
                 c->sup_words = std::move(sup_words);
                 c->bin_arc = std::move(bin_arc);
                 c->clause_start = std::move(clause_start);
                 c->lit_v = std::move(lit_v);
                 c->lit_a = std::move(lit_a);
                 c->occ_start = std::move(occ_start);
                 c->occ = std::move(occ);
                 c->n_bin = n_bin;
                 c->n_cons = n_cons;
                 c->tightness = std::move(tightness);
                 c->static_deg = std::move(static_deg);
                 c->init_size = std::move(init_size);
                 c->finish();
             })
        .def_ro("n", &rp::Compiled::n)
        .def_ro("W", &rp::Compiled::W);

    nb::class_<rp::Policy>(m, "Policy", "A scorer the core evaluates itself (Mlp, GraphNet).");

    nb::class_<rp::Mlp, rp::Policy>(m, "Mlp")
        .def("__init__",
             [](rp::Mlp* self, int n_in, float clip, std::vector<float> mean, std::vector<float> stdev,
                std::vector<std::vector<float>> weights, std::vector<std::vector<float>> biases, std::vector<bool> relu) {
                 if (weights.size() != biases.size() || weights.size() != relu.size())
                     throw std::invalid_argument("mlp: weights, biases and relu need one entry per layer");
                 rp::Mlp net;
                 net.n_in = n_in;
                 net.clip = clip;
                 net.mean = std::move(mean);
                 net.stdev = std::move(stdev);
                 int d = n_in;
                 for (std::size_t l = 0; l < weights.size(); ++l) {
                     rp::Mlp::Layer L;
                     L.n_in = d;
                     L.n_out = static_cast<int>(biases[l].size());
                     L.relu = relu[l];
                     L.w = std::move(weights[l]);
                     L.b = std::move(biases[l]);
                     d = L.n_out;
                     net.layers.push_back(std::move(L));
                 }
                 net.finish();
                 new (self) rp::Mlp(std::move(net));  // constructed only once whole and checked
             },
             "n_in"_a, "clip"_a, "mean"_a, "stdev"_a, "weights"_a, "biases"_a, "relu"_a)
        .def_ro("n_in", &rp::Mlp::n_in)
        .def("__call__",
             [](const rp::Mlp& mlp, nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu> x) {
                 if (x.shape(1) != static_cast<std::size_t>(mlp.n_in))
                     throw std::invalid_argument("mlp: rows have " + std::to_string(x.shape(1)) + " features, the model takes " +
                                                 std::to_string(mlp.n_in));
                 const int k = static_cast<int>(x.shape(0));
                 std::vector<double> out(static_cast<std::size_t>(k));
                 {
                     nb::gil_scoped_release release;
                     mlp.score(x.data(), k, out.data());
                 }
                 return out;
             },
             "x"_a);

    m.attr("GRAPH_VERSION") = rp::kGraphVersion;
    m.def("state_graph",
          [](const rp::Compiled& c, const std::vector<rp::Word>& dom, const std::vector<long long>& weights,
             const std::vector<int>& cands) {
              check_state(c, dom, weights);
              const rp::StateGraph g = rp::build_state_graph(c, dom.data(), weights.data(), cands);
              nb::dict d;
              d["nodes"] = g.nodes;
              d["open"] = std::vector<bool>(g.open.begin(), g.open.end());
              d["in_start"] = g.in_start;
              d["src"] = g.src;
              d["edges"] = g.edges;
              return d;
          },
          "compiled"_a, "domains"_a, "weights"_a, "candidates"_a,
          "The constraint graph the native graph scorer reads (flat lists; edges grouped by destination).");

    nb::class_<rp::GraphNet, rp::Policy>(m, "GraphNet")
        .def("__init__",
             [](rp::GraphNet* self, int n_in, int hidden, int rounds, float clip, std::vector<float> mean,
                std::vector<float> stdev, std::map<std::string, std::vector<float>> params,
                std::map<std::string, std::vector<int>> shapes) {
                 // bounds first: the shapes below are products of these
                 if (n_in <= 0 || n_in > 4096 || hidden <= 0 || hidden > 4096 || rounds < 0 || rounds > 64)
                     throw std::invalid_argument("graph net: n_in and hidden must be in [1, 4096], rounds in [0, 64]");
                 std::size_t used = 0;
                 auto take = [&](const std::string& key) {
                     auto it = params.find(key);
                     if (it == params.end()) throw std::invalid_argument("graph net: missing array " + key);
                     ++used;
                     return std::move(it->second);
                 };
                 // a layer's outputs: its bias's length, or `n_out` for the layers without one; a weight's stated
                 // [out, in] shape must agree (a transposed array has the same number of values)
                 auto dense = [&](const std::string& name, int in, int n_out, bool bias) {
                     rp::Dense d;
                     d.n_in = in;
                     d.w = take(name + ".w");
                     if (bias) d.b = take(name + ".b");
                     d.n_out = bias ? static_cast<int>(d.b.size()) : n_out;
                     auto sh = shapes.find(name + ".w");
                     if (sh != shapes.end() && sh->second != std::vector<int>{d.n_out, d.n_in})
                         throw std::invalid_argument("graph net " + name + ": weight shape differs from [" +
                                                     std::to_string(d.n_out) + ", " + std::to_string(d.n_in) + "]");
                     return d;
                 };
                 rp::GraphNet net;
                 net.n_in = n_in;
                 net.hidden = hidden;
                 net.clip = clip;
                 net.mean = std::move(mean);
                 net.stdev = std::move(stdev);
                 const int H = hidden;
                 net.embed0 = dense("embed0", rp::kNodeFeatures, H, true);
                 net.embed1 = dense("embed1", H, H, true);
                 for (int r = 0; r < rounds; ++r) {
                     const std::string k = "r" + std::to_string(r) + ".";
                     rp::GraphNet::Round R;
                     R.src = dense(k + "src", H, H, true);
                     R.dst = dense(k + "dst", H, H, false);
                     R.edge = dense(k + "edge", rp::kEdgeFeatures, H, false);
                     R.up0 = dense(k + "up0", 3 * H, H, true);
                     R.up1 = dense(k + "up1", H, H, true);
                     R.ln_w = take(k + "ln.w");
                     R.ln_b = take(k + "ln.b");
                     net.rounds.push_back(std::move(R));
                 }
                 net.head0 = dense("head0", H + 2 * n_in, 0, true);
                 net.head1 = dense("head1", net.head0.n_out, 0, true);
                 net.head2 = dense("head2", net.head1.n_out, 0, true);
                 if (used != params.size()) throw std::invalid_argument("graph net: arrays other than the network's");
                 net.finish();
                 new (self) rp::GraphNet(std::move(net));  // constructed only once whole and checked
             },
             "n_in"_a, "hidden"_a, "rounds"_a, "clip"_a, "mean"_a, "stdev"_a, "params"_a, "shapes"_a)
        .def_ro("n_in", &rp::GraphNet::n_in)
        .def("score",
             [](const rp::GraphNet& g, const rp::Compiled& c, const std::vector<rp::Word>& dom,
                const std::vector<long long>& weights, const std::vector<int>& cands,
                nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu> x) {
                 check_state(c, dom, weights);
                 if (x.shape(1) != static_cast<std::size_t>(g.n_in) || x.shape(0) != cands.size())
                     throw std::invalid_argument("graph net: rows must be [candidates, " + std::to_string(g.n_in) + "]");
                 g.check_instance(c);
                 std::vector<double> out(cands.size());
                 g.score_state(rp::PolicyState{c, dom.data(), weights.data()}, cands, x.data(), out.data());
                 return out;
             },
             "compiled"_a, "domains"_a, "weights"_a, "candidates"_a, "x"_a,
             "Scores of the candidates of the state (domains as words, one weight per constraint), as the core's search calls it.");

    nb::class_<PySolver>(m, "Solver")
        .def(nb::init<std::shared_ptr<rp::Compiled>, const std::string&, bool, bool, long long, double, std::uint64_t,
                      int, int, double, bool, long long, int, long long, long long, std::optional<std::vector<rp::Word>>,
                      std::optional<std::vector<long long>>, std::optional<std::vector<int>>,
                      std::optional<std::vector<std::vector<int>>>, nb::object, nb::object, std::shared_ptr<rp::Policy>>(),
             "compiled"_a, "heuristic"_a, "mac"_a, "min_conflicts"_a, "node_limit"_a, "time_limit"_a, "seed"_a,
             "top_k"_a, "max_depth"_a, "min_margin"_a, "restarts"_a, "restart_base"_a, "first_var"_a, "count_limit"_a,
             "probe_budget"_a,
             "domains"_a.none(), "weights"_a.none(), "var_rank"_a.none(), "val_rank"_a.none(), "tracer"_a.none(),
             "policy"_a.none(), "native_policy"_a.none())
        .def("solve", &PySolver::solve)
        .def("set_count_limit", &PySolver::set_count_limit)
        .def("record_trace", &PySolver::record_trace, "max_records"_a, "capture"_a)
        .def("stats",
             [](PySolver& s) {
                 const auto& st = s.core().stats();
                 nb::dict d;
                 d["nodes"] = st.nodes;
                 d["backtracks"] = st.backtracks;
                 d["propagations"] = st.propagations;
                 d["checks"] = st.checks;
                 d["restarts"] = st.restarts;
                 d["max_depth"] = st.max_depth;
                 d["time_s"] = st.time_s;
                 d["feature_time_s"] = st.feature_time_s;
                 d["policy_time_s"] = st.policy_time_s;
                 d["model_calls"] = st.model_calls;
                 d["probes"] = st.probes;
                 d["probe_nodes"] = st.probe_nodes;
                 d["probe_time_s"] = st.probe_time_s;
                 return d;
             })
        .def("solutions", [](PySolver& s) { return s.core().solutions(); })
        .def("first_solution", [](PySolver& s) { return s.core().first_solution(); })
        .def("domain_words", [](PySolver& s) { return s.core().domains(); })
        .def("weights", [](PySolver& s) { return s.core().weights(); })
        .def("unassigned", [](PySolver& s) { return s.core().unassigned(); })
        .def("dom_wdeg_order", [](PySolver& s, const std::vector<int>& c) { return s.core().dom_wdeg_order(c); })
        .def("active_clauses", [](PySolver& s) { return s.core().active_clauses(); })
        .def("first_value", [](PySolver& s, int x) { return s.core().first_value(x); })
        .def("probe_costs", [](PySolver& s, const std::vector<int>& cands, long long budget) {
            nb::gil_scoped_release release;
            return s.core().probe_costs(cands, budget);
        })
        .def("features", [](PySolver& s, const std::vector<int>& cands, int depth) {
            return to_numpy(s.core().features(cands, depth));
        })
        .def("trace_columns",
             [](PySolver& s) {
                 auto& t = s.core().trace();
                 nb::dict d;
                 d["depth"] = t.depth;
                 d["n_cands"] = t.n_cands;
                 d["chosen"] = t.chosen;
                 d["subtree"] = t.subtree;
                 std::vector<bool> solved(t.solved.begin(), t.solved.end());
                 d["solved"] = solved;
                 d["count"] = t.count;
                 d["snap_index"] = t.snap_index;
                 d["snap_depth"] = t.snap_depth;
                 d["snap_dom"] = t.snap_dom;
                 d["snap_weights"] = t.snap_weights;
                 return d;
             });

    m.def("luby", &rp::luby);
    m.def("feature_names", &rp::feature_names);
}
