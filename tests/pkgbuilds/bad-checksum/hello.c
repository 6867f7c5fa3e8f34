#include <stdio.h>

int main(void) {
    puts("hello from a containerized build");
    return 0;
}
