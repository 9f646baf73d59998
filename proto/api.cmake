# The JaPLAID wire API (package japlaid.v1), included by proto/CMakeLists.txt.
# types.proto holds the messages both services share; search.proto is the
# client-facing service of the coordinator; shard.proto is what the
# coordinator calls on each partition server. protoc-c writes
# japlaid/v1/<stem>.pb-c.{c,h} into the build directory.
jp_protoc_c(${CMAKE_CURRENT_SOURCE_DIR} japlaid/v1/types.proto)
jp_protoc_c(${CMAKE_CURRENT_SOURCE_DIR} japlaid/v1/shard.proto)
jp_protoc_c(${CMAKE_CURRENT_SOURCE_DIR} japlaid/v1/search.proto)
