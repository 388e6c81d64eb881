"""lego-inversion: Lego (Motamed, Paudel, Van Gool, ECCV 2024) personalized concept inversion.

Start at docs/architecture.md. Public entry points:

    from lego_inversion.concept import load_concept          # concept folder -> ConceptSpec
    from lego_inversion.config import InversionConfig        # every trainer knob, validated
    from lego_inversion.trainer import invert                # Eq. 3 of Lego, §4.5
    from lego_inversion.sweep import invert_many             # many runs, one UNet call per step
    from lego_inversion.generation import load_generator     # apply / compose learned concepts: .generate()
    from lego_inversion.losses import context_loss           # Eq. 2 of Lego, §4.4
    from lego_inversion.lexicon import suggest_words         # positives / negatives from WordNet
"""

__version__ = "0.1.0"
