"""The pure core: rules with no I/O, standard library only. Nothing here imports a wing of ours."""
