"""Every default of the engine, in one place.

Kind-specific recommendations (step size per toy model and so on) live with the model kinds in
`zoo.py`; the values here are the ones that hold for any model.
"""

# SGLD (docs/METHOD.md §1, §3)
STEP_SIZE = "auto"  # ε calibrated to the target acceptance; zoo's toy kinds recommend a number instead
LOCALIZATION = 1.0  # γ: small, so that the likelihood is not swamped (docs/METHOD.md §3)
CHAINS = 8
STEPS = 2000
BURNIN = 0.5  # a fraction of `steps` when < 1, a number of steps when >= 1
BATCH_SIZE = 500  # paper's DLN setting; capped at n
SEED = 0
ALGORITHM = "sgld"  # or "mala": full-batch Metropolis-adjusted Langevin, the exact baseline

# "auto" step size (docs/METHOD.md §6): dual averaging on log ε towards ACCEPTANCE_GOAL, with the
# acceptance measured on every step, over this fraction of the steps (at most half the burn-in).
# Its extra gradients cost ≈ CALIBRATION_FRACTION / (1 + 1/MALA_EVERY + CALIBRATION_FRACTION) ≈ 9%.
CALIBRATION_FRACTION = 0.1
# Models with fewer parameters aim at a higher acceptance, 1 − (1 − target)·d/AUTO_FULL_DIMENSION
# (adaptation.effective_target: on a 1-D quadratic, acceptance 0.92 still means λ̂ 35% high)
AUTO_FULL_DIMENSION = 20

# "auto" also caps the heat of minibatch gradient noise, which the MALA acceptance cannot see: ε is
# lowered twice during burn-in so that this heat is at most this share of λ̂ (schedule.cap_minibatch_heat)
MINIBATCH_HEAT_LIMIT = 0.03
MINIBATCH_HEAT_EVERY = 80  # steps between measurements: one extra gradient, so about 1% of a run

# Diagnostics and streaming
MALA_EVERY = 20  # acceptance measured on 1 step in 20 (docs/METHOD.md §2): costs one extra gradient in 20
SNAPSHOT_EVERY = 20  # steps between streamed snapshots (and between divergence/stop checks)
ACCEPTANCE_TARGET = (0.90, 0.95)  # docs/METHOD.md §2
ACCEPTANCE_GOAL = 0.92  # the point inside the band that step-size suggestions aim at

# λ̂ minus SGLD's first-order heat (ε/8)(E||∇U_B||²_A − γ tr A): the bias of the discretized,
# minibatch chain on every quadratic direction (docs/METHOD.md §8); MALA has none
HEAT_CORRECTION = True

# RMSprop preconditioner (pSGLD, docs/METHOD.md §1)
RMSPROP_ALPHA = 0.99
RMSPROP_DELTA = 0.1

# A chain whose nβ·(L_B(w) − L_n(w*)) exceeds this many times max(d, 10) has exploded: a healthy
# chain sits at nβ·ΔL ≈ λ ≤ d/2, so a thousandfold excess is no fluctuation.
EXPLOSION_FACTOR = 1000.0

# A user's checkpoint (model kind "checkpoint", the Checkpoint page): real models cost far more per
# step than the toy kinds, so 4 chains × 1000 steps (a 1.9k-parameter CNN on 1000 images: about a
# minute on one CPU core); the rest are the engine's defaults above, ε "auto".
CHECKPOINT_SAMPLER = {"chains": 4, "steps": 1000}

# Data
N_SAMPLES = 10_000
DATA_SEED = 0

# Chunk size (samples) for the exact full-dataset loss L_n(w*)
FULL_LOSS_CHUNK = 65_536

# Resource budget (llc_core/budget.py), checked before a run allocates anything. The memory budget
# is MAX_MEMORY_GB GiB unless the environment variable MEMORY_LIMIT_ENV says otherwise (a big
# machine: LLC_MAX_MEMORY_GB=64). The structural limits bound what would take hours rather than
# memory; each message names the setting to lower.
MEMORY_LIMIT_ENV = "LLC_MAX_MEMORY_GB"
MAX_MEMORY_GB = 8.0
MAX_DEPTH = 100  # weight matrices of a zoo network: dln widths/layers, mlp hidden layers
MAX_POWERS = 64  # factors of a normal-crossing potential
MAX_TRAIN_STEPS = 10_000_000  # SGD pre-training steps (train_steps)
MAX_SEED = 2**63 - 1  # seeds are whole numbers 0 … MAX_SEED (torch.Generator's range)
STOP_CHECK_SECONDS = 0.25  # the sampling loop and SGD pre-training look at a stop request this often
