#include "graph.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "core.hpp"

namespace rp {

// The dense layers and the message loop also get an AVX2 build, chosen at load time on CPUs that have it (GCC/Clang
// function multiversioning: an ifunc, so x86-64 with glibc only). The same multiplications and additions in the
// same order per output (lanes are independent; AVX2 does not bring FMA, so nothing is contracted): the same floats
// as the SSE2 build, tested bitwise against it (tests/unit/test_native_sanitizers.py builds without the clones).
#if defined(__x86_64__) && defined(__GLIBC__) && (defined(__GNUC__) || defined(__clang__)) && !defined(RP_NO_SIMD_CLONES)
#define RP_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define RP_SIMD_CLONES
#endif

namespace {

constexpr float kLogFloor = 1e-3f;  // ray_pipeline/graph.py _LOG_FLOOR: a value with no support left
constexpr float kLayerNormEps = 1e-5f;  // torch.nn.LayerNorm's default

int popcount_words(const Word* d, int W) {
    int p = 0;
    for (int k = 0; k < W; ++k) p += __builtin_popcountll(d[k]);
    return p;
}

inline int popcount_and(const Word* a, const Word* b, int W) {
    int p = 0;
    for (int k = 0; k < W; ++k) p += __builtin_popcountll(a[k] & b[k]);
    return p;
}

// log(max(k / size, floor)) for k = 0..size, per domain size: a support count is an integer, so the logs of a
// state's graph (one per value per arc) come from a few small tables instead of one logf each.
class LogShares {
public:
    const float* of(int size) {
        if (static_cast<int>(tables_.size()) <= size) tables_.resize(static_cast<std::size_t>(size) + 1);
        std::vector<float>& t = tables_[static_cast<std::size_t>(size)];
        if (t.empty())
            for (int k = 0; k <= size; ++k)
                t.push_back(std::log(std::max(static_cast<float>(k) / static_cast<float>(size), kLogFloor)));
        return t.data();
    }

private:
    std::vector<std::vector<float>> tables_;
};

// For arc e (x -> y) under the current domains: the value pairs allowed, and the mean over x's values of
// log(share of y's values supporting it), floored (graph.py's sup_x). `log_share[k]` = that log for k supports.
// FW: words per domain when known at compile time (1: the loops over words vanish), else 0 (read from c).
struct ArcSupport { int allowed; float log_sup; };

template <int FW>
ArcSupport arc_support(const Compiled& c, int e, const Word* dx, const Word* dy, const float* log_share) {
    const int W = FW > 0 ? FW : c.W;
    const Word* rows = c.sup_words.data() + c.arc_sup[e];  // row a: x's value a's supports in y
    int allowed = 0, values = 0;
    float sum = 0.0f;
    // x's values in increasing order, bit by bit (a domain never holds a value past its variable's rows)
    for (int k = 0; k < W; ++k)
        for (Word m = dx[k]; m; m &= m - 1) {
            const int a = 64 * k + __builtin_ctzll(m);
            const int s = popcount_and(rows + static_cast<std::size_t>(a) * W, dy, W);
            allowed += s;
            sum += log_share[s];
            ++values;
        }
    return {allowed, values ? sum / static_cast<float>(values) : 0.0f};
}

// logf / log1pf of small non-negative integers from tables (the same calls, made once): a constraint's weight (a
// count of failures, mostly small) once per edge per call, a variable's degree, weighted degree and domain size
// once per variable per call
struct IntLogs {
    static constexpr int kTable = 4096;
    float log[kTable], log1p[kTable];
    IntLogs() {
        for (int k = 0; k < kTable; ++k) {
            log[k] = k ? std::log(static_cast<float>(k)) : -INFINITY;  // logf(0), without raising its flag
            log1p[k] = std::log1p(static_cast<float>(k));
        }
    }
};
const IntLogs kIntLogs;

inline float log1p_weight(long long w) {
    return w >= 0 && w < IntLogs::kTable ? kIntLogs.log1p[w] : std::log1p(static_cast<float>(w));
}

// log1pf(v) for v >= 0, from the table when v is a whole number in it (integer-valued floats convert exactly)
inline float log1p_float(float v) {
    if (v >= 0.0f && v < static_cast<float>(IntLogs::kTable)) {
        const int k = static_cast<int>(v);
        if (static_cast<float>(k) == v) return kIntLogs.log1p[k];
    }
    return std::log1p(v);
}

// logf(v) for v >= 1 (a domain size), the same way
inline float log_float(float v) {
    if (v >= 0.0f && v < static_cast<float>(IntLogs::kTable)) {
        const int k = static_cast<int>(v);
        if (static_cast<float>(k) == v) return kIntLogs.log[k];
    }
    return std::log(v);
}

}  // namespace

void check_graph_instance(const Compiled& c) {
    if (c.n_cons != c.n_bin)
        throw std::invalid_argument("an instance with " + std::to_string(c.n_cons - c.n_bin) +
                                    " clauses has no constraint graph here (binary constraints only)");
    if (!c.arcs_paired) throw std::invalid_argument("graph: a binary constraint is not one pair of opposite arcs");
    for (std::size_t e = 0; e < c.arc_y.size(); ++e)
        if (c.arc_x[e] == c.arc_y[e])
            throw std::invalid_argument("graph: constraint " + std::to_string(c.arc_cid[e]) + " binds a variable to itself");
}

namespace {

// per constraint between open variables: tightness, log1p weight, each side's log-support
struct Edge { int lo, hi; float tight, lw, sup_lo, sup_hi; };

// A call's buffers, one set per thread: a search calls the scorer thousands of times on one instance, and these keep
// their capacity from call to call instead of a dozen allocations each. What carries from one call to the next is
// capacity, the log tables (which depend on nothing else) and the per-instance part below; every other field is
// overwritten before it is read.
struct Scratch {
    LogShares logs;
    // Per instance (Compiled::uid): each constraint's two arcs, and the support counts of its last call with both
    // variables open under the domains they were counted with. Between the calls of one search most constraints
    // see neither domain change, and the same domains give the same counts: reused, not recounted.
    std::uint64_t uid = 0;
    std::vector<int> arc_of;
    struct Counted { int allowed; float sup_lo, sup_hi; };
    std::vector<Counted> counted;
    std::vector<Word> counted_dom;  // [n_bin][2][W]: lo's then hi's domain; all zero = nothing counted
    StateGraph g;
    std::vector<float> size, wdeg, tsum, wt;
    std::vector<int> deg, fill;
    std::vector<Edge> kept;
    std::vector<std::uint8_t> need;  // [R + 1][n]
    std::vector<int> read, upd;  // the rows a round reads and updates (need[r], need[r + 1])
    std::vector<float> h, next, S, T, U, A, a, xn, xmean, z0, z1, zm;
};

template <int FW>
void fill_state_graph(const Compiled& c, const Word* dom, const long long* weights, const std::vector<int>& cands,
                      Scratch& s) {
    const int n = c.n, W = FW > 0 ? FW : c.W;
    StateGraph& g = s.g;
    if (s.uid != c.uid || c.uid == 0) {  // the instance's own part, once per instance (s.uid is set last)
        check_graph_instance(c);
        // each constraint's two arcs: [2 cid] from its low variable, [2 cid + 1] from its high one
        s.arc_of.assign(2 * static_cast<std::size_t>(c.n_bin), -1);
        for (std::size_t e = 0; e < c.arc_y.size(); ++e) {
            const int x = c.arc_x[e], y = c.arc_y[e];
            s.arc_of[2 * static_cast<std::size_t>(c.arc_cid[e]) + (x < y ? 0 : 1)] = static_cast<int>(e);
        }
        for (int cid = 0; cid < c.n_bin; ++cid)
            if (s.arc_of[2 * static_cast<std::size_t>(cid)] < 0 || s.arc_of[2 * static_cast<std::size_t>(cid) + 1] < 0)
                throw std::invalid_argument("graph: constraint " + std::to_string(cid) + " lacks an arc");
        s.counted.assign(static_cast<std::size_t>(c.n_bin), Scratch::Counted{0, 0.0f, 0.0f});
        s.counted_dom.assign(static_cast<std::size_t>(c.n_bin) * 2 * W, 0);
        s.uid = c.uid;
    }
    g.n = n;
    s.size.assign(n, 0.0f);
    g.open.assign(n, 0);
    int n_open = 0;
    for (int x = 0; x < n; ++x) {
        const int p = popcount_words(dom + static_cast<std::size_t>(x) * W, W);
        if (p == 0) throw std::invalid_argument("variable " + std::to_string(x) + " has an empty domain: not a search state");
        s.size[x] = static_cast<float>(p);
        g.open[x] = p > 1;
        n_open += p > 1;
    }
    s.kept.clear();
    s.deg.assign(n, 0);
    s.wdeg.assign(n, 0.0f);
    s.tsum.assign(n, 0.0f);
    s.wt.assign(n, 0.0f);
    for (int cid = 0; cid < c.n_bin; ++cid) {
        const int e_lo = s.arc_of[2 * static_cast<std::size_t>(cid)];
        const int e_hi = s.arc_of[2 * static_cast<std::size_t>(cid) + 1];
        const int x = c.arc_x[e_lo], y = c.arc_y[e_lo];
        if (!g.open[x] || !g.open[y]) continue;
        const Word* dx = dom + static_cast<std::size_t>(x) * W;
        const Word* dy = dom + static_cast<std::size_t>(y) * W;
        Word* seen = s.counted_dom.data() + static_cast<std::size_t>(cid) * 2 * W;
        Scratch::Counted& done = s.counted[static_cast<std::size_t>(cid)];
        if (!(std::equal(dx, dx + W, seen) && std::equal(dy, dy + W, seen + W))) {
            const ArcSupport lo = arc_support<FW>(c, e_lo, dx, dy, s.logs.of(static_cast<int>(s.size[y])));
            const ArcSupport hi = arc_support<FW>(c, e_hi, dy, dx, s.logs.of(static_cast<int>(s.size[x])));
            done = Scratch::Counted{lo.allowed, lo.log_sup, hi.log_sup};
            std::copy(dx, dx + W, seen);
            std::copy(dy, dy + W, seen + W);
        }
        const float w = static_cast<float>(weights[cid]);
        const float tight = 1.0f - static_cast<float>(done.allowed) / (s.size[x] * s.size[y]);
        Edge& ed = s.kept.emplace_back();  // filled in place: no Edge on the stack read back whole
        ed.lo = x;
        ed.hi = y;
        ed.tight = tight;
        ed.lw = log1p_weight(weights[cid]);
        ed.sup_lo = done.sup_lo;
        ed.sup_hi = done.sup_hi;
        for (int v : {x, y}) {
            ++s.deg[v];
            s.wdeg[v] += w;
            s.tsum[v] += tight;
            s.wt[v] += w * tight;
        }
    }
    // edges grouped by destination
    g.in_start.assign(n + 1, 0);
    for (const Edge& ed : s.kept) { ++g.in_start[ed.lo + 1]; ++g.in_start[ed.hi + 1]; }
    for (int j = 0; j < n; ++j) g.in_start[j + 1] += g.in_start[j];
    g.src.assign(g.in_start[n], 0);
    g.edges.assign(static_cast<std::size_t>(g.in_start[n]) * kEdgeFeatures, 0.0f);
    s.fill.assign(g.in_start.begin(), g.in_start.end() - 1);
    auto put = [&](int i, int j, float tight, float lw, float s_i, float s_j) {
        const int k = s.fill[j]++;
        g.src[k] = i;
        float* f = g.edges.data() + static_cast<std::size_t>(k) * kEdgeFeatures;
        f[0] = tight; f[1] = lw; f[2] = s_i; f[3] = s_j;
    };
    for (const Edge& ed : s.kept) {
        put(ed.lo, ed.hi, ed.tight, ed.lw, ed.sup_lo, ed.sup_hi);
        put(ed.hi, ed.lo, ed.tight, ed.lw, ed.sup_hi, ed.sup_lo);
    }
    g.nodes.assign(static_cast<std::size_t>(n) * kNodeFeatures, 0.0f);
    const float share = static_cast<float>(n_open) / static_cast<float>(n);
    for (int x = 0; x < n; ++x) {
        if (!g.open[x]) continue;
        float* f = g.nodes.data() + static_cast<std::size_t>(x) * kNodeFeatures;
        const float log_dom = log_float(s.size[x]), lwd = log1p_float(s.wdeg[x]);
        f[0] = log_dom;
        f[1] = log1p_float(static_cast<float>(s.deg[x]));
        f[2] = lwd;
        f[3] = log_dom - lwd;
        f[4] = s.tsum[x] / std::max(static_cast<float>(s.deg[x]), 1.0f);
        f[5] = std::log1p(s.wt[x]);
        f[6] = 0.0f;
        f[7] = 1.0f;
        f[8] = share;
    }
    const float k = static_cast<float>(std::max<std::size_t>(1, cands.size()));
    for (std::size_t i = 0; i < cands.size(); ++i) {
        const int v = cands[i];
        if (v < 0 || v >= n || !g.open[v])
            throw std::invalid_argument("graph: candidate " + std::to_string(v) + " is not an open variable of " + std::to_string(n));
        float* f = g.nodes.data() + static_cast<std::size_t>(v) * kNodeFeatures;
        f[6] = 1.0f;
        f[7] = static_cast<float>(i) / k;
    }
}

void fill_state_graph(const Compiled& c, const Word* dom, const long long* weights, const std::vector<int>& cands,
                      Scratch& s) {
    if (c.W == 1) fill_state_graph<1>(c, dom, weights, cands, s);
    else fill_state_graph<0>(c, dom, weights, cands, s);
}

}  // namespace

StateGraph build_state_graph(const Compiled& c, const Word* dom, const long long* weights, const std::vector<int>& cands) {
    Scratch s;
    fill_state_graph(c, dom, weights, cands, s);
    return std::move(s.g);
}

void Dense::finish(const std::string& name) {
    if (n_in <= 0 || n_out <= 0) throw std::invalid_argument("graph net " + name + ": empty shape");
    if (w.size() != static_cast<std::size_t>(n_in) * n_out)
        throw std::invalid_argument("graph net " + name + ": weight has " + std::to_string(w.size()) + " values, its shape " +
                                    std::to_string(n_out) + "x" + std::to_string(n_in) + " needs " +
                                    std::to_string(static_cast<std::size_t>(n_in) * n_out));
    if (!b.empty() && static_cast<int>(b.size()) != n_out)
        throw std::invalid_argument("graph net " + name + ": bias size does not match its outputs");
    for (float v : w) if (!std::isfinite(v)) throw std::invalid_argument("graph net " + name + ": non-finite weights");
    for (float v : b) if (!std::isfinite(v)) throw std::invalid_argument("graph net " + name + ": non-finite bias");
    wt.assign(w.size(), 0.0f);
    for (int o = 0; o < n_out; ++o)
        for (int i = 0; i < n_in; ++i) wt[static_cast<std::size_t>(i) * n_out + o] = w[static_cast<std::size_t>(o) * n_in + i];
}

namespace {

// Dense::apply for a width known at compile time (a multiple of 8): the outputs stay in vector registers across
// the inputs, 8 lanes a vector (GCC/Clang vector extensions: two SSE registers in the default build, one AVX
// register in the AVX2 clone). Spelled out because left to itself the compiler vectorised across the inputs,
// with shuffles, ~3x slower. Every input is taken, zeros too: a branch on zero inputs (half of them after a
// ReLU) mispredicts more than the multiply-adds it skips cost. Each output gets the same multiplications and
// additions in the same order as the general loop, so the same floats (adding a zero product leaves a sum
// unchanged, up to the sign of an exact zero).
// Always inlined: inside Dense::apply's AVX2 clone it is compiled for AVX2 too.
template <int O>
__attribute__((always_inline)) inline void apply_fixed(const std::vector<float>& wt, const std::vector<float>& b,
                                                       int n_in, const float* __restrict x, float* __restrict y) {
    typedef float v8 __attribute__((vector_size(32)));
    static_assert(O % 8 == 0, "fixed widths are multiples of 8");
    constexpr int V = O / 8;
    v8 acc[V];
    for (int v = 0; v < V; ++v) {
        if (b.empty()) acc[v] = v8{};
        else std::memcpy(&acc[v], b.data() + 8 * v, sizeof(v8));
    }
    const float* __restrict w = wt.data();
    for (int i = 0; i < n_in; ++i) {
        const float xi = x[i];
        const v8 xv = {xi, xi, xi, xi, xi, xi, xi, xi};
        const float* __restrict row = w + static_cast<std::size_t>(i) * O;
        for (int v = 0; v < V; ++v) {
            v8 r;
            std::memcpy(&r, row + 8 * v, sizeof(v8));
            acc[v] += r * xv;
        }
    }
    for (int v = 0; v < V; ++v) std::memcpy(y + 8 * v, &acc[v], sizeof(v8));
}

// apply_fixed<O> for G rows at once: each weight vector is loaded once for the G rows. Per output the same
// multiplications and additions in the same order as apply_fixed, so the same floats.
template <int O, int G>
__attribute__((always_inline)) inline void apply_fixed_rows(const std::vector<float>& wt, const std::vector<float>& b,
                                                            int n_in, const float* const* xs, float* const* ys) {
    typedef float v8 __attribute__((vector_size(32)));
    static_assert(O % 8 == 0, "fixed widths are multiples of 8");
    constexpr int V = O / 8;
    v8 acc[G][V];
    for (int g = 0; g < G; ++g)
        for (int v = 0; v < V; ++v) {
            if (b.empty()) acc[g][v] = v8{};
            else std::memcpy(&acc[g][v], b.data() + 8 * v, sizeof(v8));
        }
    const float* __restrict w = wt.data();
    for (int i = 0; i < n_in; ++i) {
        const float* __restrict row = w + static_cast<std::size_t>(i) * O;
        v8 r[V];
        for (int v = 0; v < V; ++v) std::memcpy(&r[v], row + 8 * v, sizeof(v8));
        for (int g = 0; g < G; ++g) {
            const float xi = xs[g][i];
            const v8 xv = {xi, xi, xi, xi, xi, xi, xi, xi};
            for (int v = 0; v < V; ++v) acc[g][v] += r[v] * xv;
        }
    }
    for (int g = 0; g < G; ++g)
        for (int v = 0; v < V; ++v) std::memcpy(ys[g] + 8 * v, &acc[g][v], sizeof(v8));
}

template <int O, int G>
__attribute__((always_inline)) inline void apply_rows_fixed(const Dense& d, const float* x, std::size_t ldx, float* y,
                                                            std::size_t ldy, const int* rows, int count) {
    int r = 0;
    for (; r + G <= count; r += G) {
        const float* xs[G];
        float* ys[G];
        for (int g = 0; g < G; ++g) {
            xs[g] = x + static_cast<std::size_t>(rows[r + g]) * ldx;
            ys[g] = y + static_cast<std::size_t>(rows[r + g]) * ldy;
        }
        apply_fixed_rows<O, G>(d.wt, d.b, d.n_in, xs, ys);
    }
    for (; r < count; ++r)
        apply_fixed<O>(d.wt, d.b, d.n_in, x + static_cast<std::size_t>(rows[r]) * ldx,
                       y + static_cast<std::size_t>(rows[r]) * ldy);
}

}  // namespace

RP_SIMD_CLONES
void Dense::apply_rows(const float* x, std::size_t ldx, float* y, std::size_t ldy, const int* rows, int count) const {
    switch (n_out) {  // rows at a time: enough independent sums to hide the additions' latency (all in registers
                      // in the AVX2 clone; the SSE2 build spills a few at 32 outputs)
        case 8: return apply_rows_fixed<8, 4>(*this, x, ldx, y, ldy, rows, count);
        case 16: return apply_rows_fixed<16, 4>(*this, x, ldx, y, ldy, rows, count);
        case 32: return apply_rows_fixed<32, 2>(*this, x, ldx, y, ldy, rows, count);
        default: break;
    }
    for (int r = 0; r < count; ++r)
        apply(x + static_cast<std::size_t>(rows[r]) * ldx, y + static_cast<std::size_t>(rows[r]) * ldy);
}

RP_SIMD_CLONES
void Dense::apply(const float* __restrict x, float* __restrict y) const {
    switch (n_out) {  // the widths models are trained with; any other takes the general loop
        case 8: return apply_fixed<8>(wt, b, n_in, x, y);
        case 16: return apply_fixed<16>(wt, b, n_in, x, y);
        case 32: return apply_fixed<32>(wt, b, n_in, x, y);
        case 64: return apply_fixed<64>(wt, b, n_in, x, y);
        default: break;
    }
    if (b.empty()) std::fill(y, y + n_out, 0.0f);
    else std::copy(b.begin(), b.end(), y);
    for (int i = 0; i < n_in; ++i) {
        const float xi = x[i];
        if (xi == 0.0f) continue;  // after a ReLU many inputs are zero
        const float* __restrict row = wt.data() + static_cast<std::size_t>(i) * n_out;
        for (int o = 0; o < n_out; ++o) y[o] += row[o] * xi;  // independent lanes: vectorises
    }
}

void GraphNet::finish() {
    auto need = [](bool ok, const std::string& what) { if (!ok) throw std::invalid_argument("graph net: " + what); };
    need(n_in > 0 && hidden > 0, "n_in and hidden must be positive");
    need(static_cast<int>(mean.size()) == n_in && static_cast<int>(stdev.size()) == n_in, "mean and stdev need one value per input");
    for (float s : stdev) need(std::isfinite(s) && s > 0.0f, "stdev must be positive and finite");
    for (float m : mean) need(std::isfinite(m), "mean must be finite");
    need(std::isfinite(clip) && clip > 0.0f, "clip must be positive and finite (the model's Normalize clamps)");
    auto shape = [&](Dense& d, int i, int o, bool bias, const std::string& name) {
        need(d.n_in == i && d.n_out == o, name + " takes " + std::to_string(d.n_in) + "->" + std::to_string(d.n_out) +
                                              ", expected " + std::to_string(i) + "->" + std::to_string(o));
        need(bias == !d.b.empty(), name + (bias ? " needs a bias" : " takes no bias"));
        d.finish(name);
    };
    const int H = hidden;
    shape(embed0, kNodeFeatures, H, true, "embed0");
    shape(embed1, H, H, true, "embed1");
    for (std::size_t r = 0; r < rounds.size(); ++r) {
        const std::string p = "round " + std::to_string(r) + " ";
        Round& R = rounds[r];
        shape(R.src, H, H, true, p + "src");
        shape(R.dst, H, H, false, p + "dst");
        shape(R.edge, kEdgeFeatures, H, false, p + "edge");
        shape(R.up0, 3 * H, H, true, p + "up0");
        shape(R.up1, H, H, true, p + "up1");
        need(static_cast<int>(R.ln_w.size()) == H && static_cast<int>(R.ln_b.size()) == H, p + "layer norm size");
        for (float v : R.ln_w) need(std::isfinite(v), p + "non-finite layer norm");
        for (float v : R.ln_b) need(std::isfinite(v), p + "non-finite layer norm");
    }
    need(head0.n_out > 0 && head1.n_out > 0, "empty head");
    shape(head0, H + 2 * n_in, head0.n_out, true, "head0");
    shape(head1, head0.n_out, head1.n_out, true, "head1");
    shape(head2, head1.n_out, 1, true, "head2");
    // head0 split for score_state: [W_h, W_x + W_r] on [h, x'] (with the bias), and W_r alone on the mean row
    const int O = head0.n_out, I = head0.n_in;
    head_hx = Dense{};
    head_hx.n_in = H + n_in;
    head_hx.n_out = O;
    head_hx.b = head0.b;
    head_rel = Dense{};
    head_rel.n_in = n_in;
    head_rel.n_out = O;
    for (int o = 0; o < O; ++o) {
        const float* row = head0.w.data() + static_cast<std::size_t>(o) * I;
        for (int i = 0; i < H; ++i) head_hx.w.push_back(row[i]);
        for (int i = 0; i < n_in; ++i) head_hx.w.push_back(row[H + i] + row[H + n_in + i]);
        for (int i = 0; i < n_in; ++i) head_rel.w.push_back(row[H + n_in + i]);
    }
    head_hx.finish("head0 (h, x)");
    head_rel.finish("head0 (mean)");
}

void GraphNet::check_instance(const Compiled& c) const { check_graph_instance(c); }

namespace {

// The messages into j, summed and maxed per output: sum[o], mx[o] over j's in-edges k of
// relu(S[src k][o] + Tj[o] + edge term), the edge term fused in (C = the edge layer's [kEdgeFeatures][H] weights).
// FH: H when known at compile time (the sums stay in registers), else 0. The same operations in the same order
// either way.
template <int FH>
__attribute__((always_inline)) inline void aggregate_fixed(const StateGraph& g, int j, int H_,
                                                           const float* __restrict S, const float* __restrict Tj,
                                                           const float* __restrict C, float* __restrict sum,
                                                           float* __restrict mx) {
    static_assert(kEdgeFeatures == 4, "the message loop below reads four edge features");
    const int H = FH > 0 ? FH : H_;
    // messages are >= 0, and the dense model's max sees masked zeros
    for (int o = 0; o < H; ++o) { sum[o] = 0.0f; mx[o] = 0.0f; }
    for (int k = g.in_start[j]; k < g.in_start[j + 1]; ++k) {
        const float* e = g.edges.data() + static_cast<std::size_t>(k) * kEdgeFeatures;
        const float* __restrict Si = S + static_cast<std::size_t>(g.src[k]) * H;
        const float e0 = e[0], e1 = e[1], e2 = e[2], e3 = e[3];
        for (int o = 0; o < H; ++o) {
            const float v =
                std::max(Si[o] + Tj[o] + (e0 * C[o] + e1 * C[H + o] + e2 * C[2 * H + o] + e3 * C[3 * H + o]), 0.0f);
            sum[o] += v;
            mx[o] = std::max(mx[o], v);
        }
    }
}

RP_SIMD_CLONES
void aggregate(const StateGraph& g, int j, int H, const float* __restrict S, const float* __restrict Tj,
               const float* __restrict C, float* __restrict sum, float* __restrict mx) {
    switch (H) {  // the widths models are trained with; any other takes the general loop
        case 8: return aggregate_fixed<8>(g, j, H, S, Tj, C, sum, mx);
        case 16: return aggregate_fixed<16>(g, j, H, S, Tj, C, sum, mx);
        case 32: return aggregate_fixed<32>(g, j, H, S, Tj, C, sum, mx);
        default: return aggregate_fixed<0>(g, j, H, S, Tj, C, sum, mx);
    }
}

// A thread's call buffers, reached through one function: in a shared module each access to a thread_local is a
// call into the dynamic loader, and GCC repeated it after every call score_state makes (23 of them in a call).
__attribute__((noinline)) Scratch& thread_scratch() {
    thread_local Scratch s;
    return s;
}

}  // namespace

void GraphNet::score_state(const PolicyState& ps, const std::vector<int>& cands, const float* rows, double* out) const {
    Scratch& s = thread_scratch();
    fill_state_graph(ps.compiled, ps.dom, ps.weights, cands, s);
    const StateGraph& g = s.g;
    const int n = g.n, H = hidden, R = static_cast<int>(rounds.size());
    const std::size_t nn = static_cast<std::size_t>(n), HH = static_cast<std::size_t>(H);
    // Only the candidates' final states are read, so only their receptive field is computed: need[r][x] says
    // that x's state after r rounds is read (need[R]: the candidates; need[r]: need[r + 1] and its neighbours;
    // edges come in opposite pairs). Closed variables have no edges: they never enter it. Exact, not a cut-off.
    s.need.assign((static_cast<std::size_t>(R) + 1) * nn, 0);
    auto need = [&](int r) { return s.need.data() + static_cast<std::size_t>(r) * nn; };
    for (int v : cands) need(R)[v] = 1;
    for (int r = R - 1; r >= 0; --r) {
        const std::uint8_t* later = need(r + 1);
        std::uint8_t* now = need(r);
        std::copy(later, later + n, now);
        for (int j = 0; j < n; ++j)
            if (later[j])
                for (int k = g.in_start[j]; k < g.in_start[j + 1]; ++k) now[g.src[k]] = 1;
    }
    // the same as lists of rows, in increasing order (the layers below take several rows at a time)
    auto rows_of = [&](const std::uint8_t* mask, std::vector<int>& list) {
        list.clear();
        for (int x = 0; x < n; ++x) if (mask[x]) list.push_back(x);
    };
    s.h.assign(nn * HH, 0.0f);
    s.S.assign(nn * HH, 0.0f);
    s.T.assign(nn * HH, 0.0f);
    s.U.assign(nn * HH, 0.0f);
    s.A.assign(nn * 3 * HH, 0.0f);
    s.a.assign(std::max(3 * H, H + 2 * n_in), 0.0f);
    float* h = s.h.data();
    float* a = s.a.data();
    auto relu_rows = [&](float* v, const std::vector<int>& list) {
        for (int x : list)
            for (std::size_t o = 0; o < HH; ++o) v[x * HH + o] = std::max(v[x * HH + o], 0.0f);
    };
    rows_of(need(0), s.read);
    const int m0 = static_cast<int>(s.read.size());
    embed0.apply_rows(g.nodes.data(), kNodeFeatures, s.T.data(), HH, s.read.data(), m0);
    relu_rows(s.T.data(), s.read);
    embed1.apply_rows(s.T.data(), HH, h, HH, s.read.data(), m0);
    for (int r = 0; r < R; ++r) {
        const Round& L = rounds[static_cast<std::size_t>(r)];
        rows_of(need(r), s.read);
        rows_of(need(r + 1), s.upd);
        const int mr = static_cast<int>(s.read.size()), mu = static_cast<int>(s.upd.size());
        L.src.apply_rows(h, HH, s.S.data(), HH, s.read.data(), mr);
        L.dst.apply_rows(h, HH, s.T.data(), HH, s.upd.data(), mu);
        s.next = s.h;
        // [h_j, mean message, max message] per updated j, then the update MLP on all of them
        for (int j : s.upd) {
            float* aj = s.A.data() + static_cast<std::size_t>(j) * 3 * HH;
            aggregate(g, j, H, s.S.data(), s.T.data() + j * HH, L.edge.wt.data(), aj + HH, aj + 2 * HH);
            const float cnt = std::max(static_cast<float>(g.in_start[j + 1] - g.in_start[j]), 1.0f);
            const float* hj = h + j * HH;
            for (int o = 0; o < H; ++o) { aj[o] = hj[o]; aj[H + o] /= cnt; }
        }
        L.up0.apply_rows(s.A.data(), 3 * HH, s.T.data(), HH, s.upd.data(), mu);
        relu_rows(s.T.data(), s.upd);
        L.up1.apply_rows(s.T.data(), HH, s.U.data(), HH, s.upd.data(), mu);
        for (int j : s.upd) {
            float* u = s.U.data() + j * HH;
            const float* hj = h + j * HH;
            float mean_u = 0.0f;
            for (int o = 0; o < H; ++o) { u[o] += hj[o]; mean_u += u[o]; }
            mean_u /= static_cast<float>(H);
            float var = 0.0f;
            for (int o = 0; o < H; ++o) var += (u[o] - mean_u) * (u[o] - mean_u);
            var /= static_cast<float>(H);
            const float inv = 1.0f / std::sqrt(var + kLayerNormEps);
            float* nj = s.next.data() + j * HH;
            for (int o = 0; o < H; ++o) nj[o] = (u[o] - mean_u) * inv * L.ln_w[o] + L.ln_b[o];
        }
        s.h.swap(s.next);
        h = s.h.data();
    }
    // the head: each candidate's node state, its normalised row, and that row minus the candidates' mean row
    const std::size_t k = cands.size();
    s.xn.assign(k * static_cast<std::size_t>(n_in), 0.0f);
    s.xmean.assign(n_in, 0.0f);
    for (std::size_t r = 0; r < k; ++r)
        for (int i = 0; i < n_in; ++i) {
            const float v = std::min(clip, std::max(-clip, (rows[r * n_in + i] - mean[i]) / stdev[i]));
            s.xn[r * n_in + i] = v;
            s.xmean[i] += v;
        }
    for (int i = 0; i < n_in; ++i) s.xmean[i] /= static_cast<float>(std::max<std::size_t>(k, 1));
    // head0 [h, x', x' - m] = head_hx [h, x'] - head_rel m: the mean's part once per call, not per candidate
    s.z0.assign(head0.n_out, 0.0f);
    s.z1.assign(head1.n_out, 0.0f);
    s.zm.assign(head0.n_out, 0.0f);
    head_rel.apply(s.xmean.data(), s.zm.data());
    float z2 = 0.0f;
    for (std::size_t r = 0; r < k; ++r) {
        const float* hc = h + static_cast<std::size_t>(cands[r]) * H;
        std::copy(hc, hc + H, a);
        std::copy(s.xn.data() + r * n_in, s.xn.data() + (r + 1) * n_in, a + H);
        head_hx.apply(a, s.z0.data());
        for (int o = 0; o < head0.n_out; ++o) s.z0[o] = std::max(s.z0[o] - s.zm[o], 0.0f);
        head1.apply(s.z0.data(), s.z1.data());
        for (float& v : s.z1) v = std::max(v, 0.0f);
        head2.apply(s.z1.data(), &z2);
        out[r] = static_cast<double>(z2);
    }
}

}  // namespace rp
