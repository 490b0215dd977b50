// The rectangle [-2, 2] x [-1, 1] with a circular hole of radius 0.4 at (0.5, 0):
// a 2-D domain that is not simply connected. The mesh is refined towards the hole.
// Regenerate all meshes with: python scripts/make_meshes.py
SetFactory("OpenCASCADE");
Rectangle(1) = {-2, -1, 0, 4, 2};
Disk(2) = {0.5, 0, 0, 0.4};
BooleanDifference(3) = { Surface{1}; Delete; }{ Surface{2}; Delete; };
Physical Surface("domain", 1) = {3};
Mesh.CharacteristicLengthMin = 0.04;
Mesh.CharacteristicLengthMax = 0.12;
// Element size grows linearly with the distance from the hole's centre.
Mesh.CharacteristicLengthFromPoints = 0;
Mesh.MeshSizeExtendFromBoundary = 0;
Field[1] = MathEval;
Field[1].F = "0.04 + 0.06*Sqrt((x - 0.5)^2 + y^2)";
Background Field = 1;
// Boundary tags (not needed by rdgraph, whose walls are all no-flux; for other uses).
Physical Curve("outer", 1) = {1, 2, 3, 4};
Physical Curve("hole", 2) = {5};
