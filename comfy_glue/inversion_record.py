"""What a DDIM-inverted LATENT carries, and the guard that keeps samplers from misusing it.

An inverted LATENT holds ComfyUI's unscaled latent at the last inverted sigma; its settings travel
with it under INVERSION_KEY. Inflated models also remember recent inversions by content, so a
stock sampler set up differently (noise added, other steps or scheduler) is refused with the right
settings instead of silently producing garbage.
"""

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import torch

INVERSION_KEY = "tav_inversion"
SCHEDULER = "ddim_uniform"
REMEMBERED_INVERSIONS = 32


@dataclass(frozen=True)
class InversionRecord:
    """How a LATENT was inverted: what a sampler must do to walk back along the same path."""

    steps: int  # the DDIM step count of the full schedule
    start_at_step: int  # where sampling starts (0 unless inversion_strength < 1)
    sigmas: tuple[float, ...]  # the descending sigmas sampling must use, ending at 0
    shape: tuple[int, ...]

    def sampler_settings(self) -> str:
        return (
            f"TAV Sample with steps {self.steps}, or KSamplerAdvanced with add_noise disable, sampler ddim, "
            f"scheduler {SCHEDULER}, steps {self.steps}, start_at_step {self.start_at_step}"
        )

    def schedule_problem(self, sigmas: torch.Tensor) -> str | None:
        """What is wrong with sampling this inversion along `sigmas`, or None when they retrace it."""
        expected = torch.tensor(self.sigmas)
        given = sigmas.detach().float().cpu()
        if given.shape != expected.shape or not torch.allclose(given, expected, rtol=1e-4, atol=1e-6):
            return f"its sigmas run {describe_sigmas(given)} instead of {describe_sigmas(expected)}"
        return None

    @classmethod
    def of(cls, latent: dict) -> "InversionRecord | None":
        record = latent.get(INVERSION_KEY)
        if record is None:
            return None
        return cls(
            steps=int(record["steps"]), start_at_step=int(record["start_at_step"]),
            sigmas=tuple(record["sigmas"]), shape=tuple(record["shape"]),
        )


_remembered: OrderedDict[str, InversionRecord] = OrderedDict()


def _latent_key(samples: torch.Tensor) -> str:
    data = samples.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.blake2b(data, digest_size=16).hexdigest() + str(tuple(samples.shape))


def remember_inversion(samples: torch.Tensor, record: InversionRecord) -> None:
    _remembered[_latent_key(samples)] = record
    while len(_remembered) > REMEMBERED_INVERSIONS:
        _remembered.popitem(last=False)


def inversion_guard(executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
    """OUTER_SAMPLE wrapper on inflated models: refuse to sample a known inversion the wrong way."""
    record = _remembered.get(_latent_key(latent_image)) if latent_image is not None else None
    if record is not None:
        problems = []
        if noise is not None and bool(torch.any(noise != 0)):
            problems.append("noise is added (add_noise must be disabled)")
        schedule = record.schedule_problem(sigmas)
        if schedule is not None:
            problems.append(schedule)
        if problems:
            raise ValueError(
                "This LATENT is a DDIM inversion and sampling it like this would be silently wrong: "
                + "; ".join(problems) + f". Use {record.sampler_settings()}."
            )
    return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)


def describe_sigmas(sigmas: torch.Tensor) -> str:
    return f"{len(sigmas) - 1} steps from sigma {float(sigmas[0]):.4g}"
