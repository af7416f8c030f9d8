// The graph scorer evaluated inside the core: the state's constraint graph built from the core's own domains and
// weights (the same features as ray_pipeline/graph.py, which the training data comes from), then the network of
// ray_pipeline/models/nets.py GraphScorer. The weights come from `model.native.npz` of a graph model
// (ray_pipeline/solver/policy.py NativeGraph); tests hold both halves to the Python ones.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "policy.hpp"

namespace rp {

struct Compiled;

// Bump with ray_pipeline/graph.py's GRAPH_VERSION (a test checks they agree).
inline constexpr const char* kGraphVersion = "graph-1";
inline constexpr int kNodeFeatures = 9;
inline constexpr int kEdgeFeatures = 4;

// The graph of one state, sparse: nodes [n][kNodeFeatures] (closed variables: all zero), and the directed edges
// between open variables grouped by destination (in CSR form: edges into j are [in_start[j], in_start[j+1])),
// each with its source and features [kEdgeFeatures] (message src -> dst).
struct StateGraph {
    int n = 0;
    std::vector<std::uint8_t> open;
    std::vector<float> nodes;
    std::vector<int> in_start, src;
    std::vector<float> edges;
};

// Throws std::invalid_argument for what ray_pipeline/graph.py refuses (clauses, empty domains, candidates that are
// not open variables) and for constraints that are not one pair of opposite arcs between two variables.
void check_graph_instance(const Compiled& c);
StateGraph build_state_graph(const Compiled& c, const std::uint64_t* dom, const long long* weights,
                             const std::vector<int>& cands);

struct Dense {
    int n_in = 0, n_out = 0;
    std::vector<float> w;  // [n_out][n_in] (PyTorch's Linear layout)
    std::vector<float> b;  // [n_out], or empty: no bias
    std::vector<float> wt;  // [n_in][n_out], derived by finish(): the inner loop runs over outputs
    void finish(const std::string& name);  // checks sizes and values (std::invalid_argument), derives wt
    void apply(const float* x, float* y) const;  // y = W x (+ b); x and y must not overlap
    // apply() to the rows x + r * ldx -> y + r * ldy for r in rows[0..count): the same floats, several rows at a
    // time for narrow layers (their weights loaded once for several rows); x's and y's rows must not overlap
    void apply_rows(const float* x, std::size_t ldx, float* y, std::size_t ldy, const int* rows, int count) const;
};

struct GraphNet final : Policy {
    int n_in = 0, hidden = 0;
    float clip = 0.0f;
    std::vector<float> mean, stdev;  // the candidates' feature rows: clamp((x - mean) / stdev, -clip, clip)
    Dense embed0, embed1;            // node features -> h: embed1(relu(embed0(x)))
    struct Round {
        Dense src, dst, edge, up0, up1;     // message i -> j: relu(src h_i + dst h_j + edge e_ij)
        std::vector<float> ln_w, ln_b;      // h <- LayerNorm(h + up1(relu(up0([h, mean, max]))))
    };
    std::vector<Round> rounds;
    Dense head0, head1, head2;       // [h_cand, x', x' - mean over candidates of x'] -> score
    Dense head_hx, head_rel;         // head0 split by finish() (see score_state)

    // Checks every shape and value (std::invalid_argument naming the layer).
    void finish();
    int inputs() const override { return n_in; }
    void check_instance(const Compiled& c) const override;
    void score_state(const PolicyState& s, const std::vector<int>& cands, const float* rows, double* out) const override;
};

}  // namespace rp
