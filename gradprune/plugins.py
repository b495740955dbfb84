"""The seven plugin families and their built-ins, listed explicitly (imported only when picked).

Third-party packages add plugins through the entry-point groups ``gradprune.importance``,
``gradprune.normalizers``, ``gradprune.collectors``, ``gradprune.predictors``, ``gradprune.data``,
``gradprune.recovery`` and ``gradprune.loggers``.
"""

from __future__ import annotations

from gradprune.registry import Registry

_TAYLOR = "gradprune.importance.taylor:TaylorImportance"

IMPORTANCE: Registry = Registry(
    "importance",
    base_cls="gradprune.importance.base:ImportanceEstimator",
    description="group importance estimators",
    builtins={
        "taylor": _TAYLOR,
        "taylor_first": (_TAYLOR, {"order": "first"}),
        "taylor_second": (_TAYLOR, {"order": "second"}),
        "fisher": (_TAYLOR, {"order": "second"}),
        "taylor_mix": (_TAYLOR, {"order": "mix", "granularity": "element"}),
        "magnitude": "gradprune.importance.magnitude:MagnitudeImportance",
        "random": "gradprune.importance.random_baseline:RandomImportance",
        "activation": "gradprune.importance.activation:ActivationImportance",
        "flap": "gradprune.importance.flap:FlapImportance",
    },
)

_NORM = "gradprune.importance.normalizers"
NORMALIZERS: Registry = Registry(
    "normalizers",
    base_cls=f"{_NORM}:Normalizer",
    description="per-layer score normalizers",
    builtins={n: f"{_NORM}:{c}" for n, c in {
        "none": "IdentityNormalizer", "mean": "MeanNormalizer", "max": "MaxNormalizer",
        "sum": "SumNormalizer", "l2": "L2Normalizer", "zscore": "ZScoreNormalizer", "rank": "RankNormalizer",
    }.items()},
)

_STATS = "gradprune.stats.gradient"
COLLECTORS: Registry = Registry(
    "collectors",
    base_cls=f"{_STATS}:StatCollector",
    description="per-layer gradient statistic collectors",
    builtins={
        "grad_norm": f"{_STATS}:GradNormCollector",
        "grad_mean": f"{_STATS}:GradMeanCollector",
        "grad_std": f"{_STATS}:GradStdCollector",
        "grad_max": f"{_STATS}:GradMaxCollector",
        "grad_var": f"{_STATS}:GradVarCollector",
        "grad_snr": f"{_STATS}:GradSNRCollector",
    },
)

_PRED = "gradprune.prediction.predictors"
PREDICTORS: Registry = Registry(
    "predictors",
    base_cls=f"{_PRED}:Predictor",
    description="accuracy predictors fitted on search results",
    builtins={
        "ols": f"{_PRED}:OLSPredictor",
        "ridge": f"{_PRED}:RidgePredictor",
        "single_feature": f"{_PRED}:SingleFeaturePredictor",
        "isotonic": f"{_PRED}:IsotonicPredictor",
    },
)

_DATA = "gradprune.data.sources"
DATA: Registry = Registry(
    "data",
    base_cls=f"{_DATA}:TextSource",
    description="calibration and perplexity text sources",
    builtins={
        "embedded": f"{_DATA}:EmbeddedCorpus",
        "text_file": f"{_DATA}:TextFile",
        "hf": f"{_DATA}:HFDataset",
        "instructions": "gradprune.data.instructions:InstructionSet",
    },
)

RECOVERY: Registry = Registry(
    "recovery",
    base_cls="gradprune.recovery.method:RecoveryMethod",
    description="recovery training after pruning",
    builtins={"lora": "gradprune.recovery.lora:LoRARecovery"},
)

_TRACK = "gradprune.tracking.trackers"
LOGGERS: Registry = Registry(
    "loggers",
    base_cls=f"{_TRACK}:Tracker",
    description="experiment trackers (Lightning loggers) a run, a search and an analysis report to",
    builtins={
        "mlflow": f"{_TRACK}:MLflowTracker",
        "tensorboard": f"{_TRACK}:TensorBoardTracker",
        "wandb": f"{_TRACK}:WandbTracker",
        "csv": f"{_TRACK}:CSVTracker",
    },
)

FAMILIES: dict[str, Registry] = {
    "importance": IMPORTANCE,
    "normalizers": NORMALIZERS,
    "collectors": COLLECTORS,
    "predictors": PREDICTORS,
    "data": DATA,
    "recovery": RECOVERY,
    "loggers": LOGGERS,
}
