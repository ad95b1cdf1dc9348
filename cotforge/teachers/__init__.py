"""Teachers: one async interface (:mod:`cotforge.teachers.base`), one small module per backend."""
