"""Pearce & Song (2024), "Reconciling Kaplan and Chinchilla Scaling Laws" (arXiv 2406.12907), section 2: the
Chinchilla law counted Kaplan's way.

Losses follow a Chinchilla law in TOTAL parameters N_T (Epoch AI's coefficients, `EPOCH`). A Kaplan-style study
counts non-embedding parameters N_\\E and non-embedding compute C_\\E = 6 N_\\E D instead, over Kaplan et al.'s
model sizes (768 to 1.5e9 non-embedding parameters). With d_model tied to N_\\E by a fixed aspect ratio
(N_\\E = 12 l d^2, d / l = 39.2) and a 32k vocabulary, the embeddings add vocab * d ∝ N_\\E^(1/3):

    N_T = N_\\E + γ N_\\E^(1/3),      γ = 47,491   (Pearce & Song's fit to Chinchilla's model configurations).

For each budget C_\\E the compute-optimal N_\\E minimises L(N_T(N_\\E), C_\\E / (6 N_\\E)). Setting the derivative in
N_\\E to zero gives the budget at which a given N_\\E is optimal, in closed form (as in their analysis):

    C_\\E(N_\\E) = 6 N_\\E^(1 - 1/β) N_T'^(-1/β) N_T^((1 + α)/β) (β B / (α A))^(1/β),
    N_T' = dN_T / dN_\\E = 1 + (γ/3) N_\\E^(-2/3).

Its local slope d log N_\\E / d log C_\\E tends to β / (α/3 + β) = 0.759 where embeddings dominate and to
β / (α + β) = 0.513 where they vanish, peaking at ~0.96 between; a straight line through Kaplan's range has
slope ~0.79 (the paper's 0.78), against Chinchilla's 0.51 when the same law is read in N_T and C_T = 6 N_T D.

`isoflop_runs` builds the runs such a study would train (fixed budgets, a ladder of sizes, D = budget / (6 N)),
counted either way, as bmjax Points, so bmjax's own approaches 1 and 2 can be run on them.
"""
import numpy as np

from bmjax.scaling.chinchilla import ChinchillaLaw
from bmjax.scaling.points import Points, make_points

# Epoch AI's published fit (Besiroglu et al. 2024), as Pearce & Song used it.
EPOCH = ChinchillaLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
EMBEDDING_GAMMA = 47_491.0  # N_T = N_\E + γ N_\E^(1/3)
KAPLAN_SIZES = (768.0, 1.5e9)  # Kaplan et al.'s non-embedding model sizes
LARGE_SIZES = (1e10, 1e14)  # where embeddings are at most 1% of the parameters
COUNTINGS = ("total", "non-embedding")


def total_params(n_nonembedding, gamma: float = EMBEDDING_GAMMA):
    """N_T from N_\\E at Pearce & Song's fixed aspect ratio and vocabulary."""
    n = np.asarray(n_nonembedding, dtype=np.float64)
    return n + gamma * n ** (1.0 / 3.0)


def optimal_budget_nonembedding(n_nonembedding, law: ChinchillaLaw = EPOCH, gamma: float = EMBEDDING_GAMMA):
    """The C_\\E = 6 N_\\E D at which N_\\E is compute-optimal for `law` in N_T (module docstring)."""
    n = np.asarray(n_nonembedding, dtype=np.float64)
    n_total = total_params(n, gamma)
    slope = 1.0 + (gamma / 3.0) * n ** (-2.0 / 3.0)  # dN_T / dN_\E
    a, b = law.alpha, law.beta
    return 6.0 * (n ** (b - 1.0) * n_total ** (1.0 + a) * b * law.B / (a * law.A * slope)) ** (1.0 / b)


def optimal_budget_total(n_total, law: ChinchillaLaw = EPOCH):
    """The C_T = 6 N_T D at which N_T is compute-optimal: Chinchilla's own allocation inverted."""
    allocation = law.allocation()
    return (np.asarray(n_total, dtype=np.float64) / allocation.k_n) ** (1.0 / allocation.a)


def frontier(counting: str, sizes=KAPLAN_SIZES, points: int = 64, law: ChinchillaLaw = EPOCH,
             gamma: float = EMBEDDING_GAMMA) -> tuple[np.ndarray, np.ndarray]:
    """(C, N_opt) along the compute-optimal frontier, N_\\E from sizes[0] to sizes[1] (N_\\E's range in both
    countings, so both read the same models), N and C counted `counting`'s way."""
    n_nonembedding = np.logspace(np.log10(sizes[0]), np.log10(sizes[1]), points)
    if counting == "non-embedding":
        return optimal_budget_nonembedding(n_nonembedding, law, gamma), n_nonembedding
    if counting == "total":
        n_total = total_params(n_nonembedding, gamma)
        return optimal_budget_total(n_total, law), n_total
    raise ValueError(f"counting must be one of {COUNTINGS}, got {counting!r}")


def frontier_exponent(counting: str, sizes=KAPLAN_SIZES, law: ChinchillaLaw = EPOCH,
                      gamma: float = EMBEDDING_GAMMA) -> float:
    """The slope a of log N_opt on log C over the frontier between `sizes` (least squares, as Pearce & Song's
    local fit)."""
    c, n = frontier(counting, sizes, law=law, gamma=gamma)
    return float(np.polyfit(np.log(c), np.log(n), 1)[0])


def local_exponent(n_nonembedding, law: ChinchillaLaw = EPOCH, gamma: float = EMBEDDING_GAMMA):
    """d log N_\\E / d log C_\\E on the non-embedding frontier at N_\\E (the reciprocal of the paper's g)."""
    x = np.log(np.asarray(n_nonembedding, dtype=np.float64))
    step = 1e-4
    up = np.log(optimal_budget_nonembedding(np.exp(x + step), law, gamma))
    down = np.log(optimal_budget_nonembedding(np.exp(x - step), law, gamma))
    return 2 * step / (up - down)


def isoflop_runs(counting: str, budgets, sizes=KAPLAN_SIZES, sizes_per_decade: int = 8,
                 law: ChinchillaLaw = EPOCH, gamma: float = EMBEDDING_GAMMA) -> Points:
    """The runs of an IsoFLOP study of `law`: at each budget, every N_\\E of a ladder from sizes[0] to sizes[1]
    (`sizes_per_decade` a decade) trained on D = budget / (6 N), where N and the budget are counted `counting`'s
    way (N_T and C_T = 6 N_T D, or N_\\E and C_\\E = 6 N_\\E D); the loss is the law's at N_T and D either way."""
    if counting not in COUNTINGS:
        raise ValueError(f"counting must be one of {COUNTINGS}, got {counting!r}")
    decades = np.log10(sizes[1] / sizes[0])
    n_nonembedding = sizes[0] * 10 ** (np.arange(int(decades * sizes_per_decade) + 1) / sizes_per_decade)
    n_total = total_params(n_nonembedding, gamma)
    counted = n_total if counting == "total" else n_nonembedding
    budget = np.repeat(np.asarray(budgets, dtype=np.float64), len(counted))
    n = np.tile(counted, len(budgets))
    d = budget / (6.0 * n)
    loss = law(np.tile(n_total, len(budgets)), d)
    name = "N_T" if counting == "total" else "N_nonembedding"
    return make_points(n, loss, tokens=d, flops=budget, budget=budget,
                       columns={"N": name, "D": "D", "C": f"6 {name} D", "levels": "budget"})


def isoflop_budgets(counting: str, sizes=KAPLAN_SIZES, levels: int = 8, law: ChinchillaLaw = EPOCH) -> np.ndarray:
    """`levels` budgets, log-spaced, whose optima lie inside `sizes` with a decade to spare either side (N_\\E
    from 10 sizes[0] to sizes[1] / 10), counted `counting`'s way."""
    c, _ = frontier(counting, optima_sizes(sizes), points=2, law=law)
    return np.logspace(np.log10(c[0]), np.log10(c[1]), levels)


def optima_sizes(sizes) -> tuple[float, float]:
    """The N_\\E range `isoflop_budgets` puts the optima in: a decade inside `sizes` at either end."""
    return sizes[0] * 10, sizes[1] / 10
