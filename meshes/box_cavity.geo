// The cube [-1, 1]^3 with a spherical cavity of radius 0.4 at the origin: a 3-D domain
// with an interior boundary (no-flux walls on both). The mesh is finer near the cavity.
// Regenerate all meshes with: python scripts/make_meshes.py
SetFactory("OpenCASCADE");
Box(1) = {-1, -1, -1, 2, 2, 2};
Sphere(2) = {0, 0, 0, 0.4};
BooleanDifference(3) = { Volume{1}; Delete; }{ Volume{2}; Delete; };
Physical Volume("domain", 1) = {3};
Mesh.CharacteristicLengthFromPoints = 0;
Mesh.MeshSizeExtendFromBoundary = 0;
Field[1] = MathEval;
Field[1].F = "0.1 + 0.1*Sqrt(x^2 + y^2 + z^2)";
Background Field = 1;
// Boundary tags (not needed by rdgraph, whose walls are all no-flux; for other uses).
Physical Surface("outer", 1) = {1, 2, 3, 4, 5, 6};
Physical Surface("cavity", 2) = {7};
