"""Development helpers shared by tests/, tools/ and benchmarks/: the ComfyUI host on sys.path, tiny seeded models,
the UNet harness, real servers and the browser, the headless runner, the shapes clips and the example workflows'
specs. Importable in the development environment (scripts/dev_env.sh puts dev/ on its path); never shipped to
users' ComfyUI, which loads only the pack."""
