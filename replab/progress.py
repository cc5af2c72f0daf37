"""The progress bar of a training epoch (tqdm), honest after a resume.

A run resumed inside an epoch (``--resume`` from a checkpoint saved after step k) starts its bar at k steps of the
epoch's total, shown as done; its rate (items per second) and its ETA count only the steps this process trained,
never the steps of the process before it (tqdm's own rate and ETA use ``n - initial``, and so does the rate here).
"""

from __future__ import annotations

from tqdm import tqdm


class EpochBar:
    """One epoch's bar: ``total`` steps, ``done`` of them trained already (a resumed epoch), ``items_done`` the items
    (tokens, images) those steps counted. ``update`` after every step; nothing is drawn when ``enabled`` is false.

    ``world_size``: processes training together, each counting its own items (the rate shown is theirs summed)."""

    def __init__(self, total: int, done: int, description: str, unit: str, enabled: bool, items_done: float = 0.0,
                 world_size: int = 1, file=None):
        self.unit, self.enabled, self.world_size = unit, enabled, world_size
        self.items_done = items_done
        self.bar = tqdm(total=total, initial=done, desc=description, disable=not enabled, leave=False,
                        dynamic_ncols=True, unit="batch", file=file)

    def rate(self, items: float, seconds: float) -> float:
        """Items per second of this process's steps: ``items`` counted so far in the epoch (those of the steps done
        before a resume included) over the ``seconds`` this process has trained it."""
        return (items - self.items_done) * self.world_size / max(seconds, 1e-9)

    def update(self, loss: float, items: float, seconds: float) -> None:
        """One step more: the step's ``loss``, the epoch's ``items`` so far, this process's training ``seconds``."""
        if not self.enabled:
            return
        self.bar.set_postfix(loss=f"{loss:.4f}", rate=f"{self.rate(items, seconds):,.0f} {self.unit}/s")
        self.bar.update()

    def close(self) -> None:
        self.bar.close()
