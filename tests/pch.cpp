// Compiles the shared precompiled header (test_pch.hpp) that every test executable reuses.
