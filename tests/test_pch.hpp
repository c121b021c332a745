// Precompiled for every test executable: the heavy headers most tests include anyway.
#pragma once
#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <torch/nn/module.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
