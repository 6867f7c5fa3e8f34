#include <stdio.h>

static const char *greeting(void) { return "hello from C"; }

int main(void) {
    puts(greeting());
    return 0;
}
