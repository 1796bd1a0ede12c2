"""fairseq-resmlp: ResMLP for machine translation, as a fairseq user-dir plugin.

Install with ``bash scripts/setup.sh`` (README): fairseq-fixed's metadata asks for torchaudio, whose wheels pin
other torch versions, so the script installs fairseq without its dependency resolution and everything else here.
"""

from setuptools import find_packages, setup

setup(
    name="fairseq-resmlp",
    version="0.1.0",
    description="ResMLP (Touvron et al., 2021) encoder-decoder for machine translation, as a fairseq plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["fairseq_resmlp", "fairseq_resmlp.*", "data_prep", "data_prep.*"]),
    install_requires=[
        "torch>=2.1",
        # Official fairseq 0.12.2 does not import on Python >= 3.11; fairseq-fixed is main + the dataclass fix.
        'fairseq-fixed==0.12.3.1; python_version >= "3.11"',
        'fairseq==0.12.2; python_version < "3.11"',
        "hydra-core>=1.3,<1.4",  # fairseq imports hydra.experimental, gone in 1.4
        "omegaconf>=2.1",
        "sentencepiece",
        "sacrebleu>=2",
        "numpy",
        "tqdm",
    ],
    extras_require={
        "test": ["pytest"],
        "plot": ["matplotlib"],
    },
)
