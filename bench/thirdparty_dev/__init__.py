"""Third-party training code vendored for the diagnosis evaluation's development set (see
bench/diagnosis_thirdparty.py). Each file keeps its origin and licence header."""
