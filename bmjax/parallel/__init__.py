"""Parallelism: the mesh, the logical-axis rules, multi-process start-up, which batch rows each process loads,
entering a mesh's layout (context.py) and vocabulary-parallel cross-entropy. The attention kernels that span
devices (ring, splash) are models' (bmjax/models/attention/); importing this package registers nothing.
"""
