// What the learned heuristic's native scorers share: scores for the candidates of the core's current state, from
// their feature rows and, if the scorer wants them, the state's domains and constraint weights (the graph scorer).
#pragma once

#include <cstdint>
#include <vector>

namespace rp {

struct Compiled;

struct PolicyState {
    const Compiled& compiled;
    const std::uint64_t* dom;   // n * W words
    const long long* weights;   // one per constraint
};

struct Policy {
    virtual ~Policy() = default;
    virtual int inputs() const = 0;  // feature columns per row
    // Refuses (std::invalid_argument) an instance the scorer cannot read: checked when a solver is built, not at
    // the first decision.
    virtual void check_instance(const Compiled&) const {}
    // out[i] = score of cands[i]; rows is row-major [cands.size()][inputs()]
    virtual void score_state(const PolicyState& s, const std::vector<int>& cands, const float* rows,
                             double* out) const = 0;
};

}  // namespace rp
