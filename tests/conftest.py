import importlib
import os
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

_CHECKOUT = Path(__file__).resolve().parents[1]
_SUBPACKAGES = ("tiltstream.acquire", "tiltstream.stream", "tiltstream.recon", "tiltstream.recon.align",
                "tiltstream.recon.dip", "tiltstream.viz", "tiltstream.sim")


def installed_package_problems(checkout: Path = _CHECKOUT) -> list[str]:
    """Why the imported tiltstream is not the installed one (empty when it is).

    Every package must come from this environment's site-packages and none from the source
    folders of ``checkout`` (the environment itself may live in the checkout, as .ci/run's does).
    """
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    sources = [checkout / name for name in ("tiltstream", "acquire", "stream", "recon", "viz", "sim")]
    problems = []
    for name in ("tiltstream", *_SUBPACKAGES):
        try:
            where = Path(importlib.import_module(name).__file__).resolve()
        except ImportError as e:
            problems.append(f"{name}: expected an installed package, got ImportError: {e}")
            continue
        if not where.is_relative_to(site) or any(where.is_relative_to(src) for src in sources):
            problems.append(f"{name}: expected a module under {site}, got {where}")
    return problems


def pytest_configure(config):
    """With TILTSTREAM_INSTALLED_TEST=1 (set by .ci/run) refuse to test anything but the installed wheel."""
    if os.environ.get("TILTSTREAM_INSTALLED_TEST") == "1":
        problems = installed_package_problems()
        if problems:
            raise pytest.UsageError("TILTSTREAM_INSTALLED_TEST=1: " + "; ".join(problems))


_DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class VirtualClock:
    """A monotonic clock that moves only while the code under test waits.

    Pass it as the code's ``clock``. A :class:`~tiltstream.acquire.pacing.Pacer` waits with
    ``stop_event.wait(remaining)``: pass the clock as its ``stop_event`` too, and that wait advances
    the clock by ``remaining`` at once. Other waits advance it with :meth:`wait` themselves.
    """

    def __init__(self, start_s: float = 100.0) -> None:
        self.now = start_s

    def __call__(self) -> float:
        return self.now

    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float) -> bool:
        self.now += timeout
        return False


@pytest.fixture
def virtual_clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


@pytest.fixture(params=_DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one CPU thread for a test module (alignment runs many small reconstructions: on 2
    shared cores a thread pool only spins), restored afterwards. Module-scoped, so module fixtures
    that request it run on one thread too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def simulated_recording(tmp_path_factory):
    """``make(size=, frames=, seed=)``: the path of a dynamic-nanorod recording written by
    ``tiltstream simulate`` (dose 4000 e⁻/Å² per frame), one per set of arguments per test session."""
    from tiltstream.cli import main  # noqa: PLC0415

    made: dict[tuple[int, int, int], Path] = {}

    def make(*, size: int, frames: int, seed: int) -> Path:
        key = (size, frames, seed)
        if key not in made:
            out = tmp_path_factory.mktemp("recording") / f"rod_{size}_{frames}_{seed}.h5"
            assert main(["simulate", "--phantom", "nanorod", "--size", str(size), "--frames", str(frames),
                         "--dose", "4000", "--seed", str(seed), "--out", str(out)]) == 0
            made[key] = out
        return made[key]

    return make
