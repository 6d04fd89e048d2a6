"""The training loop, whole: take the step's batches, loss, backward, optimizer step, log, then evaluate / checkpoint /
stop when due. It uses the parts `setup.setup_run` built and nothing else."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from ..errors import PreftuneError
from .callbacks import Callbacks, Metrics, TrainResult
from ..scoring.metrics import MetricAccumulator
from ..progress import TrainProgress
from .running import Run, save_outputs


class NonFiniteLoss(PreftuneError):
    """The loss or gradients became NaN/inf; names the step and the pairs of the step's batches (`indices`)."""

    def __init__(self, message: str, step: int, indices: list[int]):
        super().__init__(message)
        self.step = step
        self.indices = indices


def fit(run: Run, callbacks: Callbacks, interrupted: Callable[[], bool] = lambda: False, show_progress: bool = True) -> TrainResult:
    """Train `run` to its last step (or until early stopping, a callback or an interruption asks to stop)."""
    state, t = run.state, run.cfg.train
    before: Metrics = {}
    if run.data.eval is not None and not run.resumed:
        before = run.evaluate()
        run.log(before)
        callbacks.evaluate(0, before)
        run.sample()
    last: Metrics = {}
    after: Metrics = {}
    stop_reason: str | None = None
    with TrainProgress(run.total_steps, state.step, show_progress and run.main) as bar:
        while state.step < run.total_steps:
            tick = time.time()
            try:
                metrics = optimizer_step(run)
            except NonFiniteLoss as e:
                bar.message(skip_step(run, e))
                continue
            state.step += 1
            state.pairs_seen += int(metrics["num_pairs"])
            seconds = max(time.time() - tick, 1e-9)
            metrics |= {"pairs_per_second": metrics["num_pairs"] / seconds, "tokens_per_second": metrics["num_tokens"] / seconds,
                        "padding_share": 1 - metrics["num_tokens"] / max(metrics.pop("num_positions"), 1),
                        "epoch": run.stream.progress}
            metrics |= run.diagnostics.observe_train(state.step, metrics)
            last = metrics
            logged = state.step % t.log_every == 0 or state.step == run.total_steps
            if logged:
                run.log(metrics)
            bar.update(state.step, metrics)
            asked = callbacks.step(state.step, metrics)
            if run.data.eval is not None and t.eval_every and state.step % t.eval_every == 0 and state.step < run.total_steps:
                after = run.evaluate()
                run.log(after)
                asked = callbacks.evaluate(state.step, after) or asked
                if run.should_stop_early(after):
                    stop_reason = "early_stopping"
                    bar.message(f"early stopping at step {state.step}: eval/rewards/margins has not risen for {state.evals_without_improvement} evaluation(s)")
            over_budget = t.max_time is not None and time.time() - run.started >= t.max_time
            asked, interrupt, over_budget = run.any_process(asked, interrupted(), over_budget)
            if interrupt:
                if not logged:
                    run.log(metrics)  # the step it stops at is always logged
                saved = run.checkpoint()
                callbacks.save(saved)
                bar.message(f"interrupted: checkpoint {saved} saved; resume with resume_from=auto")
                return finish(run, callbacks, before, after, last, "interrupted")
            if over_budget and stop_reason is None and state.step < run.total_steps:
                stop_reason = "max_time"
                bar.message(f"stopping at step {state.step}: train.max_time ({t.max_time:g} s) is spent")
            if asked and stop_reason is None:
                stop_reason = "callback"
                bar.message(f"stopping at step {state.step}: a callback asked to stop")
            if t.save_every and (state.step % t.save_every == 0 or stop_reason):
                callbacks.save(run.checkpoint())
            if stop_reason:
                break
    if run.data.eval is not None:
        after = run.evaluate()
        run.log(after)
        callbacks.evaluate(state.step, after)
        run.sample()
    return finish(run, callbacks, before, after, last, stop_reason)


def optimizer_step(run: Run) -> Metrics:
    """Run `train.grad_accum` micro-batches, clip, step; returns the step's metrics (means over all pairs and processes)."""
    acc = MetricAccumulator()
    indices: list[int] = []
    accelerator, grad_accum, mode = run.accelerator, run.cfg.train.grad_accum, run.mode
    for micro in range(grad_accum):
        batch = run.stream.next()
        indices += batch.indices.tolist()
        last = micro == grad_accum - 1
        with mode.micro_batch(run.policy, last):
            with accelerator.autocast():  # the reference's forward too runs in the run's mixed precision
                loss, values = run.objective.on_batch(run.policy, batch, run.ref_train, run.cfg.train.logits_chunk)
            nonfinite = not bool(torch.isfinite(loss.detach()).all())
            if run.any_process(nonfinite)[0]:
                indices += run.stream.skip(grad_accum - micro - 1)  # the rest of the step's batches go with it
                run.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLoss(f"step {run.state.step + 1}: the loss is {loss.item()} on the batch of pairs {batch.indices.tolist()} "
                                    "(data-set positions). Try a lower learning rate or check those pairs.", run.state.step + 1, indices)
            mode.backward(loss, grad_accum)
        acc.add(values)
        acc.add_total("num_tokens", batch.token_count())
        acc.add_total("num_positions", torch.tensor(batch.input_ids.numel()))
    grad_norm = mode.clip(run.policy, run.cfg.train.max_grad_norm)
    if not math.isfinite(grad_norm):
        run.optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLoss(f"step {run.state.step + 1}: the gradient norm is {grad_norm} on the pairs {indices} (data-set positions). "
                            "Try a lower learning rate or check those pairs.", run.state.step + 1, indices)
    lr = run.optimizer.param_groups[0]["lr"]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return run.objective.summarize(acc.reduce(run.gather, count_key="num_pairs")) | {"grad_norm": grad_norm, "learning_rate": lr}


def skip_step(run: Run, e: NonFiniteLoss) -> str:
    """`train.on_nonfinite`: stop (raise, naming why) or count and log the skipped step; returns the message to show."""
    t, state = run.cfg.train, run.state
    if t.on_nonfinite == "stop" or state.skipped_steps >= t.max_skipped_steps:
        run.accelerator.end_training()
        why = "train.on_nonfinite is stop" if t.on_nonfinite == "stop" else f"{state.skipped_steps} steps were skipped already (train.max_skipped_steps)"
        raise NonFiniteLoss(f"{e} Training stopped ({why}); the last checkpoint is kept.", e.step, e.indices) from None
    state.skipped_steps += 1
    run.log({"skipped/nonfinite_steps": float(state.skipped_steps), "skipped/pairs": e.indices})  # type: ignore[dict-item]
    return f"skipped step {e.step}: non-finite loss or gradient on pairs {e.indices} ({state.skipped_steps} skipped)"


def finish(run: Run, callbacks: Callbacks, before: Metrics, after: Metrics, last: Metrics, stop_reason: str | None) -> TrainResult:
    """The result; unless interrupted, the final model and summary are saved first. Callbacks see it last."""
    run.save_reference()
    run.accelerator.wait_for_everyone()
    model = run.accelerator.unwrap_model(run.policy).model
    result = TrainResult(run.folder.path, run.state.step, run.history, before, after, last, stop_reason, time.time() - run.started,
                         run.diagnostics.findings, run.state.skipped_steps, model, run.data.tokenizer)
    full = run.mode.final_state(run.policy) if stop_reason != "interrupted" else None  # every process takes part; the main one writes
    if stop_reason != "interrupted" and run.folder.path is not None:
        result.paths = save_outputs(run, result, full)
    if run.main:
        callbacks.end(result)
    if run.cfg.report_to:
        run.accelerator.end_training()
    return result
