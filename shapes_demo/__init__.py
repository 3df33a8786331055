"""The shapes-world demo kit: a synthetic world of captioned shapes, its OpenCV judge and edit metrics, the demo
autoencoder and seeded initialisation; what the embedded demo model, its training and the benchmarks are made of.
Not the method (tav_core), and like it free of ComfyUI."""
