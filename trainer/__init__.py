"""IAT: FC-CLIP trained on real plus synthetic samples with semantic-representation alignment.

Kept import-light on purpose: `import dreammask.trainer` must not pull torch, so the API image
(which has no torch) can import sibling packages. Import `dreammask.trainer.config` or
`dreammask.trainer.modeling` explicitly.
"""
