// A dense ReLU MLP over feature rows: the student scorer evaluated inside the core, so the learned heuristic
// costs no call into Python. Pure C++; the weights come from the exported model (ray_pipeline/solver/policy.py
// loads them, the export stage checks this evaluation against ONNX Runtime on dataset rows).
#pragma once

#include <vector>

#include "policy.hpp"

namespace rp {

struct Mlp final : Policy {
    struct Layer {
        int n_in = 0, n_out = 0;
        bool relu = false;
        std::vector<float> w;   // [n_out][n_in] as given (PyTorch's Linear layout)
        std::vector<float> b;   // [n_out]
        std::vector<float> wt;  // [n_in][n_out], derived by finish(): the inner loop runs over outputs
    };
    int n_in = 0;
    float clip = 0.0f;            // normalised inputs are clamped to [-clip, clip]; <= 0: no clamp
    std::vector<float> mean, stdev;  // per input: x' = (x - mean) / stdev
    std::vector<Layer> layers;

    // Checks every size and value (std::invalid_argument naming the layer on any problem): one output, chained
    // widths, finite weights, positive finite std. Then derives the transposed weights.
    void finish();
    int width() const;  // the widest activation vector

    // out[r] = score of row r; rows is row-major [k][n_in].
    void score(const float* rows, int k, double* out) const;
    int inputs() const override { return n_in; }
    void score_state(const PolicyState&, const std::vector<int>& cands, const float* rows, double* out) const override {
        score(rows, static_cast<int>(cands.size()), out);  // the rows are all it reads
    }
};

}  // namespace rp
