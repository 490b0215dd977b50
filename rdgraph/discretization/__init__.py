"""The finite-element discretization: meshes, the model's forms, and the block operators."""
