"""Customer-base models fitted on the segmenter's own data: BG/NBD and Gamma-Gamma.

:mod:`formulas` holds the closed forms (used live); :mod:`fitting` the maximum
likelihood fits (NumPy and SciPy, used by ``segmenter model fit`` only).
"""
