/*
 * The failure counter of fq_test.h's CHECK macros, for a program that
 * uses them (through tests/unit/store_gen.c) without fq_test.c's runner:
 * tests/cluster/fq_replica_check.c, whose main reads it for its exit
 * status.
 */
#include "fq_test.h"

int fq_test_failures;
