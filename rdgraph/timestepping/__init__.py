"""Time steppers: the linear schemes, JKO, upwind, accelerated, and the retry loop."""
