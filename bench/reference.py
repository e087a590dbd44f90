#!/usr/bin/env python3
"""PyTorch reference of limaml's LiMAML step, for `limaml bench`.

It mirrors crates/models/src/limaml/ (and bench.rs, mlp.rs, train.rs) operation for
operation (limaml's first-order and second-order passes are written by hand, kernel.rs, and
compute the same values as its candle-autograd path, which this file follows), so that the
throughput ratios compare implementations of the *same* computation:

* Meta Block: input per task = [entity-id embedding, the entity's own features, a support-set
  activity summary]; an MLP (ReLU between layers) to the meta embedding. During adaptation
  each task has its own copy of the Meta Block weights, stacked over a leading task axis
  (T x in x out), so one batched matmul runs every task of the meta-batch, as in limaml.
* Global Block: input per row = [user features, item features, item-id embedding, the row's
  task's meta embedding]; an MLP to one logit. Shared by all tasks.
* Inner loop: `inner_steps` SGD steps at `inner_lr` on each task's mean support loss, adapting
  only the Meta Block, all tasks at once. First-order: the inner gradients (and, like limaml,
  the parameters the inner loss reads) are detached. Second-order: differentiated through.
* Outer step: mean over tasks of each task's mean query loss, AdamW (weight decay from the
  config, 0 by default: plain Adam) on every parameter.
* Rows of a meta-batch come in two layouts, both measured: padded to the longest task
  (padding = row 0, masked out; what vmap-style batched MAML code does) and packed back to
  back with a per-row task index and loss weight (limaml's layout). Each reported measure is
  the faster layout's; "layouts" in the JSON keeps both.
* Export: first-order adaptation on each task's support (chunks of 128 tasks) -> meta
  embeddings. Scoring: Global Block probabilities of every query row from the stored meta
  embeddings (chunks of 8192 rows).
* The timing protocol is bench.rs's: one warm-up outer step, then `meta_batches` timed steps
  over the meta-train tasks in task order (wrapping), batch building included; export over
  every task; scoring of every task's query rows.
* Three implementations ("variants") of the same step, export and scoring, each measured; every
  reported measure is the fastest variant's, and "variants" in the JSON keeps each (a variant
  that fails says why there):
  - eager: the code above, in both row layouts;
  - func: torch.func, the way functional MAML code is written: the parameters as an nn.Module
    called through `functional_call`, one task's loss written for one task and `vmap`ped over
    the meta-batch (padded rows: vmap needs one shape), the inner gradient by `grad` (nested
    inside the outer `grad` for second-order);
  - compile: the eager packed step with its forward passes (Meta Block, Global Block)
    compiled by `torch.compile` (inductor, CPU, dynamic shapes); second-order fails there
    (AOTAutograd has no double backward), which the JSON records;
  - func_compile: the func variant's whole outer gradient (`grad` of the `vmap`ped task losses)
    compiled by `torch.compile`, export and scoring as func's; torch.compile specializes the
    padded length there, so rows are padded to a power of two and every length pair the timed
    steps meet is compiled before timing. These get three warm-up outer
    steps and one warm-up export chunk and scoring chunk each, so that compilation is not
    timed (the eager variant gets bench.rs's one warm-up step).

Input: the folder `limaml bench` writes (data.json + raw little-endian arrays) and a config
JSON (layer sizes, learning rates, thread count). Output: throughputs, as JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROLE_META_TRAIN = 0


# --------------------------------------------------------------------------------------------
# Data: the task set limaml wrote


@dataclass
class TaskData:
    """The synthetic task set, as numpy arrays (row = interaction, task = one user)."""

    user_features: torch.Tensor  # n_users x user_dim
    item_features: torch.Tensor  # n_items x item_dim
    row_user: np.ndarray
    row_item: np.ndarray
    row_label: np.ndarray
    row_timestamp: np.ndarray
    task_entity: np.ndarray
    task_role: np.ndarray
    support: list[np.ndarray]  # per task, row indices
    query: list[np.ndarray]
    n_users: int
    n_items: int
    known_entity: np.ndarray  # bool per user: has a meta-train task

    @staticmethod
    def load(folder: Path) -> "TaskData":
        meta = json.loads((folder / "data.json").read_text())

        def array(name: str) -> np.ndarray:
            spec = meta["arrays"][name]
            values = np.fromfile(folder / spec["file"], dtype=np.dtype(spec["dtype"]).newbyteorder("<"))
            return values.reshape(spec["shape"])

        def ragged(name: str) -> list[np.ndarray]:
            offsets, rows = array(f"{name}_offsets"), array(f"{name}_rows").astype(np.int64)
            return [rows[offsets[t]: offsets[t + 1]] for t in range(len(offsets) - 1)]

        task_entity = array("task_entity").astype(np.int64)
        task_role = array("task_role")
        known = np.zeros(meta["users"], dtype=bool)
        known[task_entity[task_role == ROLE_META_TRAIN]] = True
        return TaskData(
            user_features=torch.from_numpy(array("user_features").astype(np.float32)),
            item_features=torch.from_numpy(array("item_features").astype(np.float32)),
            row_user=array("row_user").astype(np.int64),
            row_item=array("row_item").astype(np.int64),
            row_label=array("row_label").astype(np.float32),
            row_timestamp=array("row_timestamp"),
            task_entity=task_entity,
            task_role=task_role,
            support=ragged("support"),
            query=ragged("query"),
            n_users=meta["users"],
            n_items=meta["items"],
            known_entity=known,
        )

    def latest_support(self, task: int, max_support: int) -> np.ndarray:
        """The latest `max_support` support rows by (timestamp, row index), in time order."""
        rows = self.support[task]
        order = np.lexsort((rows, self.row_timestamp[rows]))
        return rows[order][-max_support:] if max_support > 0 else rows[:0]

    def meta_train_order(self) -> list[int]:
        """Meta-train tasks with a non-empty query, in task order (limaml's meta_train_tasks)."""
        return [t for t in range(len(self.task_entity))
                if self.task_role[t] == ROLE_META_TRAIN and len(self.query[t]) > 0]


@dataclass
class PaddedRows:
    """Rows of T tasks padded to the longest: T x L index/label/mask tensors."""

    users: torch.Tensor  # (T*L,) int64
    items: torch.Tensor
    labels: torch.Tensor  # T x L
    mask: torch.Tensor  # T x L, 1 for real rows
    inv_count: torch.Tensor  # T, 1 / rows per task
    n_tasks: int
    length: int

    @staticmethod
    def build(data: TaskData, rows_per_task: list[np.ndarray]) -> "PaddedRows":
        n_tasks = len(rows_per_task)
        length = max([len(r) for r in rows_per_task] + [1])
        padded = np.zeros((n_tasks, length), dtype=np.int64)  # padding points at row 0
        mask = np.zeros((n_tasks, length), dtype=np.float32)
        for t, rows in enumerate(rows_per_task):
            padded[t, : len(rows)] = rows
            mask[t, : len(rows)] = 1.0
        labels = data.row_label[padded] * mask
        flat = padded.reshape(-1)
        return PaddedRows(
            users=torch.from_numpy(data.row_user[flat]),
            items=torch.from_numpy(data.row_item[flat]),
            labels=torch.from_numpy(labels),
            mask=torch.from_numpy(mask),
            inv_count=torch.tensor([1.0 / max(len(r), 1) for r in rows_per_task], dtype=torch.float32),
            n_tasks=n_tasks,
            length=length,
        )

    def loss_sum(self, logits: torch.Tensor) -> torch.Tensor:
        """Sum over tasks of each task's mean logistic loss (limaml's masked_task_loss_sum)."""
        per_row = F.binary_cross_entropy_with_logits(logits, self.labels, reduction="none") * self.mask
        return (per_row.sum(-1) * self.inv_count).sum()


@dataclass
class PackedRows:
    """Rows of T tasks back to back (no padding): each row's task and its weight 1 / rows of
    its task. limaml's own layout; the padded one is what vmap-style batched MAML code uses."""

    users: torch.Tensor  # (R,) int64
    items: torch.Tensor
    labels: torch.Tensor  # R
    weight: torch.Tensor  # R, 1 / rows of the row's task
    task_of_row: torch.Tensor  # R int64
    n_tasks: int

    @staticmethod
    def build(data: TaskData, rows_per_task: list[np.ndarray]) -> "PackedRows":
        rows = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows_per_task] + [np.zeros(0, np.int64)])
        sizes = [len(r) for r in rows_per_task]
        task_of_row = np.repeat(np.arange(len(rows_per_task)), sizes)
        weight = np.repeat(np.array([1.0 / max(n, 1) for n in sizes], dtype=np.float32), sizes)
        return PackedRows(
            users=torch.from_numpy(data.row_user[rows]),
            items=torch.from_numpy(data.row_item[rows]),
            labels=torch.from_numpy(data.row_label[rows].astype(np.float32)),
            weight=torch.from_numpy(weight),
            task_of_row=torch.from_numpy(task_of_row),
            n_tasks=len(rows_per_task),
        )

    def loss_sum(self, logits: torch.Tensor) -> torch.Tensor:
        """Sum over tasks of each task's mean logistic loss."""
        per_row = F.binary_cross_entropy_with_logits(logits, self.labels, reduction="none")
        return (per_row * self.weight).sum()


@dataclass
class TaskBatch:
    """A meta-batch: the Meta Block's per-task inputs, support rows and query rows."""

    entity_index: torch.Tensor  # row of the entity-id table (the last row = unknown)
    entity: torch.Tensor  # the entity itself (for its features)
    activity: torch.Tensor  # T x (2 * item_dim + 2)
    support: "PaddedRows | PackedRows"
    query: "PaddedRows | PackedRows"
    n_tasks: int

    @staticmethod
    def build(data: TaskData, entities: list[int], supports: list[np.ndarray],
              queries: list[np.ndarray], layout: str = "padded") -> "TaskBatch":
        rows = PackedRows if layout == "packed" else PaddedRows
        entity_index = [e if data.known_entity[e] else data.n_users for e in entities]
        activity = np.stack([support_activity(data, s) for s in supports])
        return TaskBatch(
            entity_index=torch.tensor(entity_index, dtype=torch.int64),
            entity=torch.tensor(entities, dtype=torch.int64),
            activity=torch.from_numpy(activity),
            support=rows.build(data, supports),
            query=rows.build(data, queries),
            n_tasks=len(entities),
        )


def support_activity(data: TaskData, support: np.ndarray) -> np.ndarray:
    """Mean item features of the positive and of all support rows, the positive rate,
    ln(1 + n) / 5 (limaml's LimamlData::activity, for user tasks)."""
    items = data.item_features.numpy()[data.row_item[support]]
    positive = data.row_label[support] > 0.5
    n, n_pos = len(support), int(positive.sum())
    positive_mean = items[positive].sum(0) / max(n_pos, 1)
    all_mean = items.sum(0) / max(n, 1)
    tail = np.array([n_pos / max(n, 1), math.log(1.0 + n) / 5.0], dtype=np.float32)
    return np.concatenate([positive_mean, all_mean, tail]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The model, written functionally (parameters passed in) like limaml's


def mlp_forward(layers: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Dense layers [w0, b0, w1, b1, ...], ReLU between. Shared weights: x N x in, w in x out;
    per-task weights: x T x N x in, w T x in x out, b T x 1 x out (a batched matmul)."""
    n_layers = len(layers) // 2
    h = x
    for layer in range(n_layers):
        h = h.matmul(layers[2 * layer]) + layers[2 * layer + 1]
        if layer + 1 < n_layers:
            h = torch.relu(h)
    return h


class LimamlReference:
    """LiMAML's parameters in limaml's order: item-id embedding, entity-id embedding (+ an
    "unknown" row), Meta Block layers, Global Block layers."""

    def __init__(self, config: dict, data: TaskData, generator: torch.Generator):
        self.config = config
        self.data = data
        user_dim, item_dim = data.user_features.shape[1], data.item_features.shape[1]
        item_id_dim, entity_id_dim = config["item_id_embedding_dim"], config["entity_id_embedding_dim"]
        m = config["meta_embedding_dim"]
        assert config["meta_inputs"] == ["id", "features", "activity"], "the reference mirrors the default inputs"

        def normal(rows: int, dim: int) -> torch.Tensor:
            return torch.randn(rows, dim, generator=generator) * 0.05

        def glorot(fan_in: int, fan_out: int) -> torch.Tensor:
            bound = math.sqrt(6.0 / max(fan_in + fan_out, 1))
            return (torch.rand(fan_in, fan_out, generator=generator) * 2 - 1) * bound

        def mlp(widths: list[int]) -> list[torch.Tensor]:
            out = []
            for fan_in, fan_out in zip(widths[:-1], widths[1:]):
                out += [glorot(fan_in, fan_out), torch.zeros(1, fan_out)]
            return out

        entity_table = torch.cat([normal(data.n_users, entity_id_dim), torch.zeros(1, entity_id_dim)])
        meta_in = entity_id_dim + user_dim + 2 * item_dim + 2
        global_in = user_dim + item_dim + item_id_dim + m
        meta_layers = mlp([meta_in, *config["meta_hidden"], m])
        global_layers = mlp([global_in, *config["global_hidden"], 1])
        self.params = [p.requires_grad_() for p in
                       [normal(data.n_items, item_id_dim), entity_table, *meta_layers, *global_layers]]
        self.n_meta = len(meta_layers)

    # Parameter views of a flat list (the model's own, or detached copies).
    @staticmethod
    def item_embedding(params):
        return params[0]

    @staticmethod
    def entity_embedding(params):
        return params[1]

    def meta_params(self, params):
        return params[2: 2 + self.n_meta]

    def global_params(self, params):
        return params[2 + self.n_meta:]

    def meta_input(self, params, batch: TaskBatch) -> torch.Tensor:
        """T x 1 x in: [entity-id embedding, entity features, activity]."""
        parts = [self.entity_embedding(params).index_select(0, batch.entity_index),
                 self.data.user_features.index_select(0, batch.entity),
                 batch.activity]
        return torch.cat(parts, 1).unsqueeze(1)

    def global_logits(self, params, users, items, meta_per_row) -> torch.Tensor:
        """Global Block logits N of rows with their meta embeddings N x m."""
        x = torch.cat([self.data.user_features.index_select(0, users),
                       self.data.item_features.index_select(0, items),
                       self.item_embedding(params).index_select(0, items),
                       meta_per_row], 1)
        return mlp_forward(self.global_params(params), x).squeeze(1)

    def padded_logits(self, params, meta_embedding, rows) -> torch.Tensor:
        """T x L logits (packed: R logits), each task's rows with its own meta embedding
        (T x 1 x m)."""
        m = meta_embedding.shape[-1]
        if isinstance(rows, PackedRows):
            meta_per_row = meta_embedding.reshape(rows.n_tasks, m).index_select(0, rows.task_of_row)
            return self.global_logits(params, rows.users, rows.items, meta_per_row)
        meta_per_row = meta_embedding.expand(rows.n_tasks, rows.length, m).reshape(-1, m)
        return self.global_logits(params, rows.users, rows.items, meta_per_row).reshape(rows.n_tasks, rows.length)

    def adapt(self, params, batch: TaskBatch, second_order: bool) -> list[torch.Tensor]:
        """The inner loop: per-task Meta Block weights (T x in x out), adapted on the supports."""
        inner_params = params if second_order else [p.detach() for p in params]
        meta_input = self.meta_input(inner_params, batch)
        adapted = [p.unsqueeze(0).expand(batch.n_tasks, *p.shape) for p in self.meta_params(params)]
        for _ in range(self.config["inner_steps"]):
            meta_embedding = _mlp_compiled(self, adapted, meta_input)
            logits = self.padded_logits(inner_params, meta_embedding, batch.support)
            support_loss = batch.support.loss_sum(logits)
            grads = torch.autograd.grad(support_loss, adapted, create_graph=second_order)
            if not second_order:
                grads = [g.detach() for g in grads]
            adapted = [a - self.config["inner_lr"] * g for a, g in zip(adapted, grads)]
        return adapted

    def meta_train_step(self, optimizer, batch: TaskBatch, second_order: bool) -> float:
        """One outer step: adapt on supports, mean query loss over tasks, AdamW."""
        params = self.params
        adapted = self.adapt(params, batch, second_order)
        meta_embedding = _mlp_compiled(self, adapted, self.meta_input(params, batch))
        logits = self.padded_logits(params, meta_embedding, batch.query)
        loss = batch.query.loss_sum(logits) / batch.n_tasks
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    def adapted_meta_embeddings(self, batches: list[TaskBatch]) -> torch.Tensor:
        """First-order adaptation on each task's support, no outer graph: meta embeddings."""
        params = [p.detach() for p in self.params]
        out = []
        for batch in batches:
            with torch.enable_grad():
                adapted = [p.unsqueeze(0).expand(batch.n_tasks, *p.shape).detach().requires_grad_()
                           for p in self.meta_params(params)]
                meta_input = self.meta_input(params, batch)
                for _ in range(self.config["inner_steps"]):
                    logits = self.padded_logits(params, _mlp_compiled(self, adapted, meta_input), batch.support)
                    grads = torch.autograd.grad(batch.support.loss_sum(logits), adapted)
                    adapted = [(a - self.config["inner_lr"] * g).detach().requires_grad_()
                               for a, g in zip(adapted, grads)]
            with torch.no_grad():
                out.append(_mlp_compiled(self, adapted, meta_input).reshape(batch.n_tasks, -1))
        return torch.cat(out)

    @torch.no_grad()
    def score_with_embeddings(self, users: np.ndarray, items: np.ndarray, meta_per_row: np.ndarray,
                              chunk: int) -> np.ndarray:
        """Serving: Global Block probabilities of rows given each row's meta embedding."""
        params = [p.detach() for p in self.params]
        scores = []
        for start in range(0, len(users), chunk):
            stop = start + chunk
            logits = self.global_logits(params, torch.from_numpy(users[start:stop]),
                                        torch.from_numpy(items[start:stop]),
                                        torch.from_numpy(meta_per_row[start:stop]))
            scores.append(torch.sigmoid(logits).numpy())
        return np.concatenate(scores)


# --------------------------------------------------------------------------------------------
# The torch.func variant: functional_call + vmap over tasks + grad


class FuncModule(torch.nn.Module):
    """LimamlReference's parameters as an nn.Module (sharing their storage), so that one task's
    logits are `functional_call(module, params, ...)`."""

    def __init__(self, ref: LimamlReference):
        super().__init__()
        self.ref = ref
        for i, p in enumerate(ref.params):
            self.register_parameter(f"p{i}", torch.nn.Parameter(p.detach(), requires_grad=True))
        self.names = [f"p{i}" for i in range(len(ref.params))]
        self.meta_names = self.names[2: 2 + ref.n_meta]

    def forward(self, entity_index, meta_features, users, items, meta_per_row=None):
        """One task: its Meta Block input (entity-id row, features + activity) -> meta embedding;
        the Global Block logits of its rows (L). With `meta_per_row` (serving: rows x m), the
        Global Block logits of rows with those embeddings."""
        params = [getattr(self, n) for n in self.names]
        ref = self.ref
        if meta_per_row is None:
            meta_input = torch.cat([F.embedding(entity_index.unsqueeze(0), ref.entity_embedding(params)),
                                    meta_features.unsqueeze(0)], 1)
            meta_embedding = mlp_forward(ref.meta_params(params), meta_input)
            meta_per_row = meta_embedding.expand(users.shape[0], meta_embedding.shape[1])
        x = torch.cat([F.embedding(users, ref.data.user_features),
                       F.embedding(items, ref.data.item_features),
                       F.embedding(items, ref.item_embedding(params)),
                       meta_per_row], 1)
        return mlp_forward(ref.global_params(params), x).squeeze(1)


def func_task_tensors(model: LimamlReference, batch: TaskBatch):
    """Per-task (leading axis T) inputs of a padded batch: entity row, features + activity."""
    features = torch.cat([model.data.user_features.index_select(0, batch.entity), batch.activity], 1)
    return batch.entity_index, features


def func_rows(rows: PaddedRows):
    n, length = rows.n_tasks, rows.length
    return (rows.users.reshape(n, length), rows.items.reshape(n, length), rows.labels, rows.mask,
            rows.inv_count)


class FuncVariant:
    """The step, export and scoring written with torch.func over one task, vmapped."""

    layout = "padded"

    def __init__(self, model: LimamlReference, config: dict, compiled: bool = False):
        from torch.func import functional_call, grad, vmap
        self.model, self.config = model, config
        self.module = FuncModule(model)
        self.params = dict(self.module.named_parameters())
        self.functional_call, self.grad, self.vmap = functional_call, grad, vmap
        # compiled: the whole outer gradient (grad of the vmapped task losses, the inner grad
        # nested in it) traced by torch.compile into one forward graph, so that second-order
        # needs no double backward through a compiled graph.
        self.compiled = compiled
        self._outer_grad = {}
        self._compiled_for = set()
        # One graph per (support, query) padded length pair and order.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)

    def optimizer(self):
        c = self.config
        return torch.optim.AdamW(list(self.params.values()), lr=c["learning_rate"], betas=(0.9, 0.999),
                                 eps=1e-8, weight_decay=c["weight_decay"])

    def _task_loss(self, params, entity_index, features, users, items, labels, mask, inv_count):
        logits = self.functional_call(self.module, params, (entity_index, features, users, items))
        per_row = F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * mask
        return per_row.sum() * inv_count

    def _adapt(self, params, second_order, entity_index, features, s_users, s_items, s_labels, s_mask, s_inv):
        """One task's adapted Meta Block weights (dict), from `params`."""
        inner = params if second_order else {k: v.detach() for k, v in params.items()}
        meta = {k: params[k] for k in self.module.meta_names}
        for _ in range(self.config["inner_steps"]):
            def support_loss(meta_weights):
                return self._task_loss({**inner, **meta_weights}, entity_index, features,
                                       s_users, s_items, s_labels, s_mask, s_inv)
            grads = self.grad(support_loss)(meta)
            if not second_order:
                grads = {k: g.detach() for k, g in grads.items()}
            meta = {k: meta[k] - self.config["inner_lr"] * grads[k] for k in meta}
        return meta

    def outer_grad(self, second_order: bool):
        """grad of the mean task loss with respect to the parameters (compiled or not)."""
        if second_order in self._outer_grad:
            return self._outer_grad[second_order]

        def task_outer(params, entity_index, features, s_users, s_items, s_labels, s_mask, s_inv,
                       q_users, q_items, q_labels, q_mask, q_inv):
            adapted = self._adapt(params, second_order, entity_index, features,
                                  s_users, s_items, s_labels, s_mask, s_inv)
            return self._task_loss({**params, **adapted}, entity_index, features,
                                   q_users, q_items, q_labels, q_mask, q_inv)

        def batch_loss(params, *task_tensors):
            losses = self.vmap(task_outer, in_dims=(None,) + (0,) * 12)(params, *task_tensors)
            return losses.sum() / losses.shape[0]

        outer = self.grad(batch_loss)
        if self.compiled:
            outer = torch.compile(outer, dynamic=True)
        self._outer_grad[second_order] = outer
        return outer

    def task_rows(self, rows: PaddedRows):
        """func_rows; compiled, padded further to a power of two: torch.compile specializes the
        padded length of grad-of-vmap code (marking it dynamic fails), so a few static lengths."""
        users, items, labels, mask, inv_count = func_rows(rows)
        if not self.compiled:
            return users, items, labels, mask, inv_count
        extra = max(8, 1 << (rows.length - 1).bit_length()) - rows.length
        return (F.pad(users, (0, extra)), F.pad(items, (0, extra)), F.pad(labels, (0, extra)),
                F.pad(mask, (0, extra)), inv_count)

    def compile_for(self, batch: TaskBatch, second_order: bool) -> None:
        """Compiles (runs once, no update) the outer gradient for `batch`'s padded lengths."""
        key = (second_order, self.task_rows(batch.support)[0].shape[1], self.task_rows(batch.query)[0].shape[1])
        if key not in self._compiled_for:
            self._compiled_for.add(key)
            entity_index, features = func_task_tensors(self.model, batch)
            self.outer_grad(second_order)(self.params, entity_index, features,
                                          *self.task_rows(batch.support), *self.task_rows(batch.query))

    def meta_train_step(self, optimizer, batch: TaskBatch, second_order: bool) -> float:
        entity_index, features = func_task_tensors(self.model, batch)
        support, query = self.task_rows(batch.support), self.task_rows(batch.query)
        grads = self.outer_grad(second_order)(self.params, entity_index, features, *support, *query)
        for name, p in self.params.items():
            p.grad = grads[name]
        optimizer.step()
        return 0.0

    def adapted_meta_embeddings(self, batches: list[TaskBatch]) -> torch.Tensor:
        params = {k: v.detach() for k, v in self.params.items()}
        ref = self.model

        def task_embedding(entity_index, features, *support):
            adapted = self._adapt(params, False, entity_index, features, *support)
            meta_input = torch.cat([F.embedding(entity_index.unsqueeze(0), ref.entity_embedding(ref.params)),
                                    features.unsqueeze(0)], 1)
            return mlp_forward([adapted[k] for k in self.module.meta_names], meta_input).squeeze(0)

        out = []
        with torch.no_grad():
            for batch in batches:
                entity_index, features = func_task_tensors(ref, batch)
                out.append(self.vmap(task_embedding)(entity_index, features, *func_rows(batch.support)))
        return torch.cat(out)

    @torch.no_grad()
    def score_with_embeddings(self, users, items, meta_per_row, chunk):
        params = {k: v.detach() for k, v in self.params.items()}
        out = []
        for start in range(0, len(users), chunk):
            stop = start + chunk
            logits = self.functional_call(self.module, params, (None, None, torch.from_numpy(users[start:stop]),
                                                                torch.from_numpy(items[start:stop]),
                                                                torch.from_numpy(meta_per_row[start:stop])))
            out.append(torch.sigmoid(logits).numpy())
        return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# The torch.compile variant: the eager packed step with compiled forward passes


class CompiledReference(LimamlReference):
    """LimamlReference whose Meta Block, Global Block and loss run compiled (inductor)."""

    def __init__(self, config, data, generator):
        super().__init__(config, data, generator)
        # Second-order differentiates through the compiled backward (create_graph), which
        # AOTAutograd's donated buffers forbid.
        torch._functorch.config.donated_buffer = False
        self._mlp = torch.compile(mlp_forward, dynamic=True)
        self._global = torch.compile(self._global_logits_eager, dynamic=True)

    def _global_logits_eager(self, global_params, item_embedding, users, items, meta_per_row):
        x = torch.cat([self.data.user_features.index_select(0, users),
                       self.data.item_features.index_select(0, items),
                       item_embedding.index_select(0, items), meta_per_row], 1)
        return mlp_forward(global_params, x).squeeze(1)

    def global_logits(self, params, users, items, meta_per_row):
        return self._global(self.global_params(params), self.item_embedding(params), users, items, meta_per_row)


def _mlp_compiled(model, layers, x):
    return model._mlp(layers, x) if isinstance(model, CompiledReference) else mlp_forward(layers, x)


# --------------------------------------------------------------------------------------------
# The benchmark (bench.rs's protocol)


# How each phase is timed, as bench.rs does (`fastest_pass`): passes of the same work until at
# least 3 passes and 0.5 s in all (at most 50), the fastest pass kept (timeit's convention).
TIMING_MIN_PASSES, TIMING_MIN_SECONDS, TIMING_MAX_PASSES = 3, 0.5, 50


def fastest_pass(run_pass) -> float:
    best, total = None, 0.0
    for k in range(TIMING_MAX_PASSES):
        if k >= TIMING_MIN_PASSES and total >= TIMING_MIN_SECONDS:
            break
        seconds = run_pass(k)
        total += seconds
        best = seconds if best is None else min(best, seconds)
    return best


def bench(config: dict, data: TaskData, second_order: bool, layout: str, variant: str = "eager") -> dict:
    generator = torch.Generator().manual_seed(config["seed"])
    if variant in ("func", "func_compile"):
        model = FuncVariant(LimamlReference(config, data, generator), config, compiled=variant == "func_compile")
        optimizer = model.optimizer()
    else:
        model = (CompiledReference if variant == "compile" else LimamlReference)(config, data, generator)
        optimizer = torch.optim.AdamW(model.params, lr=config["learning_rate"], betas=(0.9, 0.999),
                                      eps=1e-8, weight_decay=config["weight_decay"])
    warm_ups = 1 if variant == "eager" else 3
    order = data.meta_train_order()
    meta_batch, max_support, max_query = config["meta_batch"], config["max_support"], config["max_query"]

    def batch_of(step: int) -> TaskBatch:
        picked = [order[(step * meta_batch + k) % len(order)] for k in range(meta_batch)]
        return TaskBatch.build(data,
                               [int(data.task_entity[t]) for t in picked],
                               [data.latest_support(t, max_support) for t in picked],
                               [data.query[t][:max_query] for t in picked], layout)

    for step in range(warm_ups):
        model.meta_train_step(optimizer, batch_of(step), second_order)
    if variant == "func_compile":  # compile every padded length pair the timed passes can meet
        for step in range(TIMING_MAX_PASSES * config["meta_batches"]):
            model.compile_for(batch_of(step + warm_ups), second_order)

    def train_pass(k: int) -> float:  # the next meta_batches outer steps
        started = time.perf_counter()
        for step in range(config["meta_batches"]):
            model.meta_train_step(optimizer, batch_of(warm_ups + k * config["meta_batches"] + step), second_order)
        return time.perf_counter() - started

    train_seconds = fastest_pass(train_pass)
    trained_tasks = config["meta_batches"] * meta_batch

    # Export: every task, adapted on its (capped) support, in chunks; batch building included.
    n_tasks = len(data.task_entity)
    supports = [data.latest_support(t, max_support) for t in range(n_tasks)]
    empty = np.zeros(0, dtype=np.int64)
    chunk = config["export_chunk"]
    if variant != "eager":  # compile (and first-call) warm-up of export and scoring
        warm = TaskBatch.build(data, [int(e) for e in data.task_entity[:chunk]], supports[:chunk],
                               [empty] * len(supports[:chunk]), layout)
        model.adapted_meta_embeddings([warm])
        warm_rows = np.concatenate(data.query)[: config["score_chunk"]]
        model.score_with_embeddings(data.row_user[warm_rows], data.row_item[warm_rows],
                                    np.zeros((len(warm_rows), config["meta_embedding_dim"]), np.float32),
                                    config["score_chunk"])
    exported = {}

    def export_pass(_: int) -> float:  # batch building included
        started = time.perf_counter()
        batches = [TaskBatch.build(data, [int(e) for e in data.task_entity[s: s + chunk]],
                                   supports[s: s + chunk], [empty] * len(supports[s: s + chunk]), layout)
                   for s in range(0, n_tasks, chunk)]
        exported["embeddings"] = model.adapted_meta_embeddings(batches).numpy()
        return time.perf_counter() - started

    export_seconds = fastest_pass(export_pass)
    embeddings = exported["embeddings"]

    # Scoring: every query row with its task's embedding.
    rows = np.concatenate(data.query)
    per_row = np.repeat(embeddings, [len(q) for q in data.query], axis=0)
    def score_pass(_: int) -> float:
        started = time.perf_counter()
        model.score_with_embeddings(data.row_user[rows], data.row_item[rows], per_row, config["score_chunk"])
        return time.perf_counter() - started

    score_seconds = fastest_pass(score_pass)

    def per_second(n: int, seconds: float) -> float:
        return n / max(seconds, 1e-9)

    return {
        "second_order": second_order,
        "variant": variant,
        "layout": layout,
        "tasks_per_second": per_second(trained_tasks, train_seconds),
        "entities_per_second": per_second(n_tasks, export_seconds),
        "rows_per_second": per_second(len(rows), score_seconds),
        "meta_batches": config["meta_batches"],
        "tasks": trained_tasks,
        "entities": n_tasks,
        "rows": len(rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the folder limaml bench wrote")
    parser.add_argument("--config", type=Path, required=True, help="the model/training config JSON")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()

    config = json.loads(args.config.read_text())
    # The same number of compute threads as limaml (candle) uses.
    torch.set_num_threads(config["threads"])
    data = TaskData.load(args.data)
    # Both row layouts; each measure reports the faster one (the comparison is against the best
    # reference we have), and "layouts" keeps both.
    # Variants (eager in both layouts, torch.func, torch.compile): each measure reports the
    # fastest that ran; "variants" keeps each, with the error of any that failed.
    measures = ("tasks_per_second", "entities_per_second", "rows_per_second")
    variants = {"eager": {}, "func": {}, "compile": {}, "func_compile": {}}
    wanted = config.get("variants", list(variants))
    results = {"layouts": {}, "variants": variants}
    for order, second_order in (("first_order", False), ("second_order", True)):
        runs = {layout: bench(config, data, second_order, layout) for layout in ("padded", "packed")}
        results["layouts"][order] = runs
        best = dict(runs["padded"])
        for measure in measures:
            layout = max(runs, key=lambda name: runs[name][measure])
            best[measure] = runs[layout][measure]
            best[measure.replace("per_second", "layout")] = layout
        best.pop("layout")
        variants["eager"][order] = best
        for variant, layout in (("func", "padded"), ("compile", "packed"), ("func_compile", "padded")):
            if variant not in wanted:
                variants[variant][order] = {"error": "not run (config `variants`)"}
                continue
            try:
                variants[variant][order] = bench(config, data, second_order, layout, variant)
            except Exception as error:  # noqa: BLE001 -- the JSON says why a variant failed
                message = f"{type(error).__name__}: {error}".strip()
                variants[variant][order] = {"error": message[:2000]}
                print(f"reference: {variant} {order} failed: {message[:300]}", file=sys.stderr)
        fastest = dict(best)
        for measure in measures:
            ran = {name: v[order][measure] for name, v in variants.items() if measure in v[order]}
            name = max(ran, key=ran.get)
            fastest[measure] = ran[name]
            fastest[measure.replace("per_second", "variant")] = name
        fastest.pop("variant", None)
        results[order] = fastest
    results.update({
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        # ru_maxrss is KiB on Linux; includes the torch import itself (~300 MiB).
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    })
    if args.json:
        print(json.dumps(results))
    else:
        for order in ("first_order", "second_order"):
            r = results[order]
            print(f"{order}: {r['tasks_per_second']:.0f} tasks/s, {r['entities_per_second']:.0f} entities/s, "
                  f"{r['rows_per_second']:.0f} rows/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
