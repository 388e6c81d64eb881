"""lego-inversion: Lego (Motamed, Paudel, Van Gool, ECCV 2024) personalized concept inversion.

Start at docs/architecture.md. Public entry points:

    from lego_inversion.concept import load_concept          # concept folder -> ConceptSpec
    from lego_inversion.config import InversionConfig        # every trainer knob, validated
    from lego_inversion.trainer import invert                # Eq. 3 of Lego, §4.5
    from lego_inversion.generation import generate           # apply / compose learned concepts
    from lego_inversion.losses import context_loss           # Eq. 2 of Lego, §4.4
"""

__version__ = "0.1.0"
