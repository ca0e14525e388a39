"""Audit any class map for duplicated strips and seams, and repair it (strips removed, gaps closed)."""
