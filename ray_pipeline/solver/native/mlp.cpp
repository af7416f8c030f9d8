#include "mlp.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace rp {

namespace {
bool all_finite(const std::vector<float>& v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}
}  // namespace

void Mlp::finish() {
    if (n_in <= 0) throw std::invalid_argument("mlp: n_in must be positive");
    if (static_cast<int>(mean.size()) != n_in || static_cast<int>(stdev.size()) != n_in)
        throw std::invalid_argument("mlp: mean and stdev need one value per input (" + std::to_string(n_in) + ")");
    if (!all_finite(mean) || !all_finite(stdev) || !std::isfinite(clip))
        throw std::invalid_argument("mlp: mean, stdev and clip must be finite");
    for (float s : stdev)
        if (!(s > 0.0f)) throw std::invalid_argument("mlp: stdev must be positive");
    if (layers.empty()) throw std::invalid_argument("mlp: no layers");
    int d = n_in;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        Layer& L = layers[l];
        const std::string where = "mlp layer " + std::to_string(l);
        if (L.n_in != d) throw std::invalid_argument(where + ": takes " + std::to_string(L.n_in) + " inputs, gets " + std::to_string(d));
        if (L.n_out <= 0) throw std::invalid_argument(where + ": no outputs");
        if (L.w.size() != static_cast<std::size_t>(L.n_in) * L.n_out || static_cast<int>(L.b.size()) != L.n_out)
            throw std::invalid_argument(where + ": weight or bias size does not match its shape");
        if (!all_finite(L.w) || !all_finite(L.b)) throw std::invalid_argument(where + ": non-finite weights");
        L.wt.assign(L.w.size(), 0.0f);
        for (int o = 0; o < L.n_out; ++o)
            for (int i = 0; i < L.n_in; ++i) L.wt[static_cast<std::size_t>(i) * L.n_out + o] = L.w[static_cast<std::size_t>(o) * L.n_in + i];
        d = L.n_out;
    }
    if (d != 1) throw std::invalid_argument("mlp: the last layer must have one output (a score), it has " + std::to_string(d));
    if (layers.back().relu) throw std::invalid_argument("mlp: the score layer takes no ReLU");
}

int Mlp::width() const {
    int w = n_in;
    for (const Layer& L : layers) w = std::max(w, L.n_out);
    return w;
}

void Mlp::score(const float* rows, int k, double* out) const {
    const int wd = width();
    std::vector<float> a(wd), h(wd);
    for (int r = 0; r < k; ++r) {
        const float* x = rows + static_cast<std::size_t>(r) * n_in;
        // the same float operations as the exported graph's Sub, Div, Clip
        for (int i = 0; i < n_in; ++i) {
            float v = (x[i] - mean[i]) / stdev[i];
            if (clip > 0.0f) v = std::min(clip, std::max(-clip, v));
            a[i] = v;
        }
        for (const Layer& L : layers) {
            std::copy(L.b.begin(), L.b.end(), h.begin());
            for (int i = 0; i < L.n_in; ++i) {
                const float xi = a[i];
                if (xi == 0.0f) continue;  // after a ReLU most inputs are zero
                const float* wrow = L.wt.data() + static_cast<std::size_t>(i) * L.n_out;
                for (int o = 0; o < L.n_out; ++o) h[o] += wrow[o] * xi;  // independent lanes: vectorises
            }
            if (L.relu)
                for (int o = 0; o < L.n_out; ++o) h[o] = std::max(h[o], 0.0f);
            std::swap(a, h);
        }
        out[r] = static_cast<double>(a[0]);
    }
}

}  // namespace rp
