"""How the embedded demo model is sampled: it keeps shapes best at low guidance (cfg 3: 80 %, 5: 77.5 %), so its
quality gate (tools/train_demo_model.py), benchmarks/shapes_edit.py and the demo workflow all sample at GATE_CFG."""

GATE_CFG, GATE_STEPS = 2.0, 25
