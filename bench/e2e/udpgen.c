// SPDX-License-Identifier: Apache-2.0
/* udpgen: the e2e bench's faster 64-byte UDP generator (trafgen tops out near one core's
 * sendto/TX_RING rate and its TX_RING path aborts on EAGAIN when the sender's veth peer
 * has an XDP program).
 *
 * One AF_PACKET socket per process, PACKET_QDISC_BYPASS, sendmmsg() of BATCH copies of
 * one 60-byte frame (64 B on a wire with FCS), a per-socket send buffer raised with
 * SO_SNDBUFFORCE (no global sysctl touched), blocking sends so a full buffer waits
 * instead of failing. Forks one process per CPU (pinned to CPUs 0..N-1).
 * Runs until SIGINT/SIGTERM or --seconds; the parent forwards the signal to its children.
 * Counting is done by the caller on the interfaces' counters; this only prints the number
 * of frames the kernel accepted.
 *
 *   udpgen IFNAME DSTMAC SRCMAC SRCIP DSTIP DPORT [--procs N] [--seconds S]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FRAME_LEN 60
#define BATCH 64

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static int parse_mac(const char *s, uint8_t *m)
{
	return sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &m[0], &m[1], &m[2], &m[3], &m[4],
		      &m[5]) == 6 ? 0 : -1;
}

static uint16_t ip_csum(const uint8_t *p, int len)
{
	uint32_t sum = 0;
	for (int i = 0; i < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static int build_frame(uint8_t *f, char **argv)
{
	struct in_addr sa, da;
	memset(f, 0, FRAME_LEN);
	if (parse_mac(argv[2], f) || parse_mac(argv[3], f + 6))
		return -1;
	if (inet_pton(AF_INET, argv[4], &sa) != 1 || inet_pton(AF_INET, argv[5], &da) != 1)
		return -1;
	int dport = atoi(argv[6]);
	f[12] = 0x08; f[13] = 0x00;                        /* IPv4 */
	uint8_t *ip = f + 14;
	ip[0] = 0x45;                                      /* v4, ihl 5 */
	ip[2] = 0; ip[3] = 46;                             /* total length: 20 + 8 + 18 */
	ip[8] = 64;                                        /* ttl */
	ip[9] = 17;                                        /* udp */
	memcpy(ip + 12, &sa, 4);
	memcpy(ip + 16, &da, 4);
	uint16_t c = ip_csum(ip, 20);
	ip[10] = c >> 8; ip[11] = c & 0xff;
	uint8_t *udp = ip + 20;
	udp[0] = 40000 >> 8; udp[1] = 40000 & 0xff;       /* source port */
	udp[2] = dport >> 8; udp[3] = dport & 0xff;
	udp[4] = 0; udp[5] = 26;                           /* length: 8 + 18 */
	/* checksum 0: none (allowed for UDP over IPv4); payload zeros */
	return 0;
}

static long run(int cpu, const char *ifname, const uint8_t *frame, time_t deadline)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);

	int fd = socket(AF_PACKET, SOCK_RAW, 0);          /* protocol 0: send only */
	if (fd < 0) { perror("socket"); return -1; }
	int one = 1, sndbuf = 16 << 20;
	setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0)
		perror("SO_SNDBUFFORCE (continuing with the default buffer)");
	struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_ifindex = (int)if_nametoindex(ifname),
				  .sll_halen = 6 };
	if (!ll.sll_ifindex) { perror("if_nametoindex"); return -1; }
	memcpy(ll.sll_addr, frame, 6);

	struct iovec iov = { .iov_base = (void *)frame, .iov_len = FRAME_LEN };
	struct mmsghdr msgs[BATCH];
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		msgs[i].msg_hdr.msg_name = &ll;
		msgs[i].msg_hdr.msg_namelen = sizeof(ll);
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	long sent = 0;
	unsigned n = 0;
	while (!stop) {
		int r = sendmmsg(fd, msgs, BATCH, 0);
		if (r > 0)
			sent += r;
		else if (r < 0 && errno != EAGAIN && errno != ENOBUFS && errno != EINTR) {
			perror("sendmmsg");
			break;
		}
		if ((++n & 1023) == 0 && deadline && time(NULL) >= deadline)
			break;
	}
	close(fd);
	return sent;
}

int main(int argc, char **argv)
{
	if (argc < 7) {
		fprintf(stderr, "usage: %s IFNAME DSTMAC SRCMAC SRCIP DSTIP DPORT [--procs N] [--seconds S]\n", argv[0]);
		return 2;
	}
	int procs = 1, seconds = 0;
	for (int i = 7; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--procs")) procs = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--seconds")) seconds = atoi(argv[i + 1]);
	}
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (procs < 1 || procs > ncpu) { fprintf(stderr, "--procs must be 1..%ld\n", ncpu); return 2; }
	uint8_t frame[FRAME_LEN];
	if (build_frame(frame, argv)) { fprintf(stderr, "bad MAC/IP argument\n"); return 2; }
	time_t deadline = seconds > 0 ? time(NULL) + seconds : 0;

	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	pid_t kids[256];
	for (int i = 1; i < procs; i++) {
		kids[i] = fork();
		if (kids[i] == 0) {
			long s = run(i, argv[1], frame, deadline);
			printf("cpu %d: %ld frames accepted\n", i, s);
			return s < 0;
		}
	}
	long s = run(0, argv[1], frame, deadline);
	printf("cpu 0: %ld frames accepted\n", s);
	for (int i = 1; i < procs; i++) {
		kill(kids[i], SIGTERM);
		waitpid(kids[i], NULL, 0);
	}
	return s < 0;
}
