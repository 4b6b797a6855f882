"""Pipelines: a YAML file of steps run in order over a catalog, with profiles (smoke/full)
and the steps in an explicit table (predict, train, evaluate). The top of the library: may
import runs, training and evaluation; only cli and jupyter import it.
"""
