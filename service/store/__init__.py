"""The only code that talks to Redis: key builders, scripts, and one store per aggregate."""
