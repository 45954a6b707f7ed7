/* sdn MESSAGE: send MESSAGE as one datagram to $NOTIFY_SOCKET (sd_notify
   without libsystemd, for a busybox rootfs). Built by tests/test_notify.py,
   or for the cgroup v2 guest by tools/vm/test-cgroupv2.sh. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
int main(int argc, char **argv) {
    const char *p = getenv("NOTIFY_SOCKET");
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (!p || argc < 2) return 2;
    strncpy(a.sun_path, p, sizeof a.sun_path - 1);
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    return sendto(s, argv[1], strlen(argv[1]), 0, (struct sockaddr *)&a, sizeof a) < 0;
}
