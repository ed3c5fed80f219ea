"""A random but reproducible mass-action chemical reaction network.

Reaction r converts one or two reactant species into one or two product
species at the mass-action rate

    rate_r(c, k) = k_r * prod_{s in reactants(r)} c_s

(a reactant listed twice, 2 A -> ..., enters squared), and the species obey

    dc/dt = S @ rate(c, k),        S[s, r] = (# s produced by r) - (# s consumed by r),

the standard reaction-rate ODE of chemical kinetics (Feinberg, *Foundations of
Chemical Reaction Network Theory*, Springer 2019, ch. 2; Érdi & Tóth,
*Mathematical Models of Chemical Reactions*, 1989). Each network is drawn from
``numpy.random.default_rng(seed)``: the same arguments give the same network.

Shapes: ``make_mass_action_network(n_species, n_reactions, seed)`` returns
``(f, k_default)`` with ``f(c, k)``: concentrations ``c`` (n_species,), rate
constants ``k`` (n_reactions,) -> dc/dt (n_species,). ``k_default`` holds rate
constants drawn log-uniformly from [K_LOW, K_HIGH]. The Jacobian d f / d c is
(n_species, n_species) and sparse: species s depends on the reactants of the
reactions that change s.

The function is vectorised over reactions, so hundreds of reactions trace
quickly: the reactant concentrations are gathered with a constant
(n_reactions, 2) index table (a one-reactant reaction points its second slot
at an appended constant 1), multiplied with ``np.prod`` along the table's rows,
scaled by ``k`` and accumulated with the constant matrix product ``S @ rates``.
``f.reactants``, ``f.products`` (index tables, -1 = none) and
``f.stoichiometry`` (S) are attached for inspection.
"""

from __future__ import annotations

import numpy as np

N_SPECIES_DEFAULT = 10
N_REACTIONS_DEFAULT = 20
SEED_DEFAULT = 0
K_LOW, K_HIGH = 0.1, 10.0


def random_network(n_species, n_reactions, seed=SEED_DEFAULT):
    """Index tables ``(reactants, products)``, each (n_reactions, 2) with -1 for "none"."""
    rng = np.random.default_rng(seed)
    reactants = np.full((n_reactions, 2), -1, dtype=np.int64)
    products = np.full((n_reactions, 2), -1, dtype=np.int64)
    for r in range(n_reactions):
        while True:
            n_in, n_out = rng.integers(1, 3, size=2)
            ins = np.sort(rng.integers(0, n_species, size=n_in))
            outs = np.sort(rng.integers(0, n_species, size=n_out))
            if n_in != n_out or not np.array_equal(ins, outs):  # the reaction must change something
                break
        reactants[r, :n_in] = ins
        products[r, :n_out] = outs
    return reactants, products


def stoichiometry(n_species, reactants, products):
    """S (n_species, n_reactions): produced minus consumed, float64."""
    S = np.zeros((n_species, len(reactants)))
    for r, (ins, outs) in enumerate(zip(reactants, products)):
        for s in ins[ins >= 0]:
            S[s, r] -= 1.0
        for s in outs[outs >= 0]:
            S[s, r] += 1.0
    return S


def make_mass_action_network(n_species=N_SPECIES_DEFAULT, n_reactions=N_REACTIONS_DEFAULT, seed=SEED_DEFAULT):
    """A reproducible random network: ``(f, k_default)`` with ``f(c, k) -> dc/dt``."""
    for name, value in (("n_species", n_species), ("n_reactions", n_reactions)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"make_mass_action_network needs a positive int {name}, got {value!r}")
    n_species, n_reactions = int(n_species), int(n_reactions)
    reactants, products = random_network(n_species, n_reactions, seed)
    S = stoichiometry(n_species, reactants, products)
    # index n_species is the appended constant 1: a missing second reactant
    gather = np.where(reactants >= 0, reactants, n_species)
    one = np.ones(1)

    def mass_action(c, k):
        padded = np.concatenate((c, one))          # (n_species + 1,)
        rates = k * np.prod(padded[gather], axis=1)  # (n_reactions,)
        return S @ rates

    mass_action.__doc__ = (f"mass-action network, {n_species} species, {n_reactions} reactions "
                           f"(seed {seed}): c ({n_species},), k ({n_reactions},) -> ({n_species},).")
    mass_action.reactants = reactants
    mass_action.products = products
    mass_action.stoichiometry = S
    rng = np.random.default_rng([seed, 1])
    k_default = np.exp(rng.uniform(np.log(K_LOW), np.log(K_HIGH), size=n_reactions))
    return mass_action, k_default


def initial_value(n_species=N_SPECIES_DEFAULT, seed=SEED_DEFAULT):
    """Positive concentrations in [0.5, 1.5), reproducible: (n_species,)."""
    return np.random.default_rng([seed, 2]).uniform(0.5, 1.5, size=n_species)
