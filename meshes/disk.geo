// Unit disk centred at the origin: a smooth 2-D domain.
// Regenerate all meshes with: python scripts/make_meshes.py
SetFactory("OpenCASCADE");
Disk(1) = {0, 0, 0, 1.0};
// DOLFINx reads only cells in physical groups: tag the domain (2) and its boundary (1).
Physical Surface("domain", 1) = {1};
Physical Curve("boundary", 1) = {1};
Mesh.CharacteristicLengthMin = 0.06;
Mesh.CharacteristicLengthMax = 0.06;
