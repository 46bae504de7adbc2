"""Routing quality: measure, fit and calibrate the router's scorer on labelled prompts.

``data`` loads labelled CSVs, ``metrics`` computes APGR / CPT / accuracy at a strong share,
``fit`` fits the logistic scorer and cross-validates it grouped by subject, ``evaluation``
puts cross-validated figures beside baselines, ``calibrate`` turns scores into thresholds.
The command-line modules (``eval_cli``, ``fit_cli``, ``calibrate_cli``) are
``zeta-router eval|fit|calibrate``. See docs/routing-quality.md.
"""
