#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        puts("hello-worker-c 1.0.0");
        return 0;
    }
    puts("hello-worker-c: ready (cpu)");
    return 0;
}
