"""The particle picture: the Markov process whose law the reaction–diffusion system is."""
