"""Which scenes and labels exist: the catalog spec (strict models), loading YAML and STAC through
one loader, dataset layouts (LandCover.ai, GAMUS, ISPRS, iSAID, patterns) and validation. May
import geometry, bundle.card (class tables) and scene.
"""
