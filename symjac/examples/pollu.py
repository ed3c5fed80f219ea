"""The POLLU problem: a chemical reaction part of an air-pollution model.

The 20-species, 25-reaction stiff kinetics scheme of the Dutch National
Institute of Public Health and Environmental Protection (RIVM) air-pollution
model, as given by J.G. Verwer, "Gauss-Seidel iteration for stiff ODEs from
chemical kinetics", SIAM J. Sci. Comput. 15 (1994) 1243-1250, and used as a
test problem by Hairer & Wanner (*Solving ODEs II*, 2nd ed., sec. IV.10) and
in the Bari/CWI "Test Set for IVP Solvers" (problem POLLU). With the reaction
rates (all mass action)

    r1  = k1  y1        r10 = k10 y11 y1     r19 = k19 y16
    r2  = k2  y2 y4     r11 = k11 y13        r20 = k20 y17 y6
    r3  = k3  y5 y2     r12 = k12 y10 y2     r21 = k21 y19
    r4  = k4  y7        r13 = k13 y14        r22 = k22 y19
    r5  = k5  y7        r14 = k14 y1 y6      r23 = k23 y1 y4
    r6  = k6  y7 y6     r15 = k15 y3         r24 = k24 y19 y1
    r7  = k7  y9        r16 = k16 y4         r25 = k25 y20
    r8  = k8  y9 y6     r17 = k17 y4
    r9  = k9  y11 y2    r18 = k18 y16

the right-hand side is

    y1'  = -r1 - r10 - r14 - r23 - r24 + r2 + r3 + r9 + r11 + r12 + r22 + r25
    y2'  = -r2 - r3 - r9 - r12 + r1 + r21
    y3'  = -r15 + r1 + r17 + r19 + r22
    y4'  = -r2 - r16 - r17 - r23 + r15
    y5'  = -r3 + 2 r4 + r6 + r7 + r13 + r20
    y6'  = -r6 - r8 - r14 - r20 + r3 + 2 r18
    y7'  = -r4 - r5 - r6 + r13
    y8'  =  r4 + r5 + r6 + r7
    y9'  = -r7 - r8
    y10' = -r12 + r7 + r9
    y11' = -r9 - r10 + r8 + r11
    y12' =  r9
    y13' = -r11 + r10
    y14' = -r13 + r12
    y15' =  r14
    y16' = -r18 - r19 + r16
    y17' = -r20
    y18' =  r20
    y19' = -r21 - r22 - r24 + r23 + r25
    y20' = -r25 + r24

with the rate constants ``K_DEFAULT`` = (k1, ..., k25) of the test set, the
initial value ``Y0`` (y2 = 0.2, y4 = 0.04, y7 = 0.1, y8 = 0.3, y9 = 0.01,
y17 = 0.007, all others 0) and the time span [0, 60] (minutes).

Shapes: ``y`` (20,), ``k`` (25,) -> ``f`` (20,); Jacobian d f / d y is
(20, 20) with 82 structural non-zeros (y8, y12, y15 and y18 are products
that never react: their columns are zero).
"""

from __future__ import annotations

import numpy as np

SHAPES = {"y": 20, "k": 25}
WRT = "y"
K_DEFAULT = np.array([0.35, 26.6, 1.23e4, 8.6e-4, 8.2e-4, 1.5e4, 1.3e-4, 2.4e4, 1.65e4, 9.0e3,
                      2.2e-2, 1.2e4, 1.88, 1.63e4, 4.8e6, 3.5e-4, 1.75e-2, 1.0e8, 4.44e11, 1.24e3,
                      2.1, 5.78, 4.74e-2, 1.78e3, 3.12])
Y0 = np.zeros(20)
Y0[[1, 3, 6, 7, 8, 16]] = [0.2, 0.04, 0.1, 0.3, 0.01, 0.007]
T_END = 60.0
NONZEROS = 82


def pollu(y, k):
    """Right-hand side of the POLLU system: y (20,), k (25,) -> (20,)."""
    (k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13,
     k14, k15, k16, k17, k18, k19, k20, k21, k22, k23, k24, k25) = (k[i] for i in range(25))
    (y1, y2, y3, y4, y5, y6, y7, y8, y9, y10,
     y11, y12, y13, y14, y15, y16, y17, y18, y19, y20) = (y[i] for i in range(20))
    r1, r2, r3, r4, r5 = k1*y1, k2*y2*y4, k3*y5*y2, k4*y7, k5*y7
    r6, r7, r8, r9, r10 = k6*y7*y6, k7*y9, k8*y9*y6, k9*y11*y2, k10*y11*y1
    r11, r12, r13, r14, r15 = k11*y13, k12*y10*y2, k13*y14, k14*y1*y6, k15*y3
    r16, r17, r18, r19, r20 = k16*y4, k17*y4, k18*y16, k19*y16, k20*y17*y6
    r21, r22, r23, r24, r25 = k21*y19, k22*y19, k23*y1*y4, k24*y19*y1, k25*y20
    return np.array([-r1 - r10 - r14 - r23 - r24 + r2 + r3 + r9 + r11 + r12 + r22 + r25,
                     -r2 - r3 - r9 - r12 + r1 + r21,
                     -r15 + r1 + r17 + r19 + r22,
                     -r2 - r16 - r17 - r23 + r15,
                     -r3 + 2*r4 + r6 + r7 + r13 + r20,
                     -r6 - r8 - r14 - r20 + r3 + 2*r18,
                     -r4 - r5 - r6 + r13,
                     r4 + r5 + r6 + r7,
                     -r7 - r8,
                     -r12 + r7 + r9,
                     -r9 - r10 + r8 + r11,
                     r9,
                     -r11 + r10,
                     -r13 + r12,
                     r14,
                     -r18 - r19 + r16,
                     -r20,
                     r20,
                     -r21 - r22 - r24 + r23 + r25,
                     -r25 + r24])


def jacobian_pollu(y, k):
    """Hand-derived d pollu / d y at one point: (20, 20), 82 structural non-zeros.

    Entry (i, j) is the sum over reactions of (stoichiometric coefficient of
    species i) x (d r / d y_j); written out entry by entry, 1-based names.
    """
    (k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13,
     k14, k15, k16, k17, k18, k19, k20, k21, k22, k23, k24, k25) = (k[i] for i in range(25))
    (y1, y2, y3, y4, y5, y6, y7, y8, y9, y10,
     y11, y12, y13, y14, y15, y16, y17, y18, y19, y20) = (y[i] for i in range(20))
    J = np.zeros((20, 20), dtype=np.result_type(y, k, float))

    def row(i, entries):
        for j, value in entries.items():
            J[i - 1, j - 1] = value

    row(1, {1: -k1 - k10*y11 - k14*y6 - k23*y4 - k24*y19, 2: k2*y4 + k3*y5 + k9*y11 + k12*y10,
            4: -k23*y1 + k2*y2, 5: k3*y2, 6: -k14*y1, 10: k12*y2, 11: -k10*y1 + k9*y2, 13: k11,
            19: -k24*y1 + k22, 20: k25})
    row(2, {1: k1, 2: -k2*y4 - k3*y5 - k9*y11 - k12*y10, 4: -k2*y2, 5: -k3*y2, 10: -k12*y2,
            11: -k9*y2, 19: k21})
    row(3, {1: k1, 3: -k15, 4: k17, 16: k19, 19: k22})
    row(4, {1: -k23*y4, 2: -k2*y4, 3: k15, 4: -k2*y2 - k16 - k17 - k23*y1})
    row(5, {2: -k3*y5, 5: -k3*y2, 6: k6*y7 + k20*y17, 7: 2*k4 + k6*y6, 9: k7, 14: k13, 17: k20*y6})
    row(6, {1: -k14*y6, 2: k3*y5, 5: k3*y2, 6: -k6*y7 - k8*y9 - k14*y1 - k20*y17, 7: -k6*y6,
            9: -k8*y6, 16: 2*k18, 17: -k20*y6})
    row(7, {6: -k6*y7, 7: -k4 - k5 - k6*y6, 14: k13})
    row(8, {6: k6*y7, 7: k4 + k5 + k6*y6, 9: k7})
    row(9, {6: -k8*y9, 9: -k7 - k8*y6})
    row(10, {2: -k12*y10 + k9*y11, 9: k7, 10: -k12*y2, 11: k9*y2})
    row(11, {1: -k10*y11, 2: -k9*y11, 6: k8*y9, 9: k8*y6, 11: -k9*y2 - k10*y1, 13: k11})
    row(12, {2: k9*y11, 11: k9*y2})
    row(13, {1: k10*y11, 11: k10*y1, 13: -k11})
    row(14, {2: k12*y10, 10: k12*y2, 14: -k13})
    row(15, {1: k14*y6, 6: k14*y1})
    row(16, {4: k16, 16: -k18 - k19})
    row(17, {6: -k20*y17, 17: -k20*y6})
    row(18, {6: k20*y17, 17: k20*y6})
    row(19, {1: -k24*y19 + k23*y4, 4: k23*y1, 19: -k21 - k22 - k24*y1, 20: k25})
    row(20, {1: k24*y19, 19: k24*y1, 20: -k25})
    return J


def sample_states(rng, n_points):
    """``n_points`` positive states around Y0 (every species present): (n_points, 20)."""
    return (Y0 + 0.01) * rng.uniform(0.5, 1.5, size=(n_points, 20))


def main(argv=None):
    from symjac.examples import _run_demo

    rng = np.random.default_rng(0)
    y = sample_states(rng, 1)[0]
    return _run_demo(pollu, jacobian_pollu, SHAPES, WRT,
                     point=(y, K_DEFAULT), batch=(sample_states(rng, 5), K_DEFAULT), argv=argv)


if __name__ == "__main__":
    main()
