"""A self-contained demo: synthetic 1 m land-cover scenes and a small L2HNet trained on them.

``scene.make_scene`` draws a seeded RGB scene with its label map (SinoLC-1 codes);
``train`` fits the shipped demo checkpoint on such scenes, so the whole pipeline can be
exercised end to end without downloading imagery or the published weights.
"""
