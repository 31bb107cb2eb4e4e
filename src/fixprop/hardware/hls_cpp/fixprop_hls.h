// fixprop HLS support: the casts ap_fixed and ac_fixed have no mode for, as explicit integer code
// (docs/arithmetic.md defines the modes; docs/hardware.md the LFSR), and the LFSR lanes of
// stochastic rounding. Include after fixprop_ap.h or fixprop_ac.h. Written by fixprop.
#ifndef FIXPROP_HLS_H
#define FIXPROP_HLS_H

#include <stdint.h>

namespace fixprop {

// Rounding modes of the explicit casts (fixprop's names).
enum Rounding { TRN, TRN_ZERO, TRN_INF, RND, RND_ZERO, RND_MIN_INF, RND_INF, RND_CONV };
// Overflow modes (applied after rounding).
enum Overflow { SAT, WRAP, SAT_SYM, SAT_ZERO };

// Whether dropping the low SHIFT (> 0) bits of the raw integer `raw` rounds up (adds one to the
// floor `raw >> SHIFT`), by a deterministic mode: on the dropped bits d, against half = 2**(SHIFT-1).
template <int MODE, int SHIFT, int RW> bool rounds_up(const typename int_of<RW>::type &raw) {
    typedef typename uint_of<SHIFT>::type bits_t;
    const bits_t dropped = bits_t(raw);                       // the low SHIFT bits
    const bits_t half = bits_t(1) << (SHIFT - 1);
    const bool negative = raw < 0;
    const bool any = dropped != 0, above = dropped > half, tie = dropped == half;
    const bool odd = ((raw >> SHIFT) & 1) != 0;                // the floor is odd
    switch (MODE) {
        case TRN: return false;                                 // floor
        case TRN_ZERO: return negative && any;                  // toward zero
        case TRN_INF: return any;                               // ceiling
        case RND: return above || tie;                          // ties up
        case RND_ZERO: return above || (tie && negative);       // ties toward zero
        case RND_MIN_INF: return above;                         // ties down
        case RND_INF: return above || (tie && !negative);       // ties away from zero
        default: return above || (tie && odd);                  // RND_CONV: ties to even
    }
}

// Stochastic rounding: up when U * 2**(T - BITS) < d * 2**(T - SHIFT), T = max(SHIFT, 64), where
// d holds the SHIFT dropped bits and U the lane's BITS random bits (docs/hardware.md).
template <int SHIFT, int BITS, int RW> bool stochastic_up(const typename int_of<RW>::type &raw, uint64_t u) {
    const int T = SHIFT > 64 ? SHIFT : 64;
    typedef typename uint_of<T>::type wide_t;
    const wide_t dropped = wide_t(typename uint_of<SHIFT>::type(raw));
    const wide_t lhs = wide_t(u) << (T - BITS);
    const wide_t rhs = dropped << (T - SHIFT);
    return lhs < rhs;
}

// The next BITS bits of an LFSR lane, first output bit most significant: a Galois register
// shifting right that outputs its least significant bit o and XORs TAPS in when o is 1.
inline uint64_t lfsr_draw(uint64_t &lane, int bits, uint64_t taps) {
    uint64_t u = 0;
    for (int i = 0; i < bits; i++) {
        const uint64_t out = lane & 1;
        u = (u << 1) | out;
        lane = (lane >> 1) ^ (out ? taps : 0);
    }
    return u;
}

// The rounded raw integer r into a W-bit word (signed when S) by the overflow mode; returns the
// value of type DST (whose W bits are set from r: WRAP keeps the low W bits).
template <class DST, int W, bool S, int OVF, int RW> DST overflow_into(typename int_of<RW>::type r) {
    typedef typename int_of<RW>::type int_t;
    const int_t hi = (int_t(1) << (S ? W - 1 : W)) - 1;
    const int_t lo = S ? int_t(-hi - 1) : int_t(0);
    if (OVF == SAT) {
        if (r > hi) r = hi;
        if (r < lo) r = lo;
    } else if (OVF == SAT_SYM) {                          // signed: [-max, max]
        const int_t lo_sym = S ? int_t(-hi) : lo;
        if (r > hi) r = hi;
        if (r < lo_sym) r = lo_sym;
    } else if (OVF == SAT_ZERO) {
        if (r > hi || r < lo) r = 0;
    }
    DST out;
    set_raw<W>(out, r);
    return out;
}

}  // namespace fixprop

#endif
