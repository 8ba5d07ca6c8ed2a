// SPDX-License-Identifier: Apache-2.0
/*
 * toa_peer: how a server finds its real client behind a TOA-inserting layer-4 balancer.
 *
 * Hybrid cloud / SNAT (IPv4 client, TCP option 200): nothing to change. With the toa module
 * loaded, accept() and getpeername() already return the client's address and port.
 *
 * NAT64 (IPv6 client, TCP option 253): an IPv4 socket cannot hold an IPv6 address, so the
 * module answers getsockopt(fd, IPPROTO_IP, TOA_SO_GET_LOOKUP = 4096). It fails with ENOENT when
 * the connection carried no NAT64 address (and with ENOPROTOOPT when the module is not loaded):
 * then fall back to getpeername().
 *
 *   cc -O2 -Wall -o toa_peer toa_peer.c
 *   ./toa_peer 8080          serve on :8080 (dual-stack), print each client's real address
 *   ./toa_peer --self-test   one loopback connection; checks the fallback path
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TOA_SO_GET_LOOKUP 4096

/* Layout shared with the module: 16 + 2 bytes, padded to 20 by in6_addr's alignment. */
struct toa_nat64_peer {
	struct in6_addr saddr;
	uint16_t sport; /* network byte order */
};

_Static_assert(sizeof(struct toa_nat64_peer) == 20, "toa_nat64_peer must be 20 bytes");

/*
 * Writes the real client address of connected socket fd as text into buf.
 * Returns 1 for a NAT64 client, 0 for an address from getpeername(), -1 on error.
 */
static int real_peer(int fd, char *buf, size_t buflen)
{
	struct toa_nat64_peer peer;
	socklen_t len = sizeof(peer);
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	char host[INET6_ADDRSTRLEN];

	if (getsockopt(fd, IPPROTO_IP, TOA_SO_GET_LOOKUP, &peer, &len) == 0) {
		inet_ntop(AF_INET6, &peer.saddr, host, sizeof(host));
		snprintf(buf, buflen, "[%s]:%u", host, ntohs(peer.sport));
		return 1;
	}
	/* ENOENT: no NAT64 address on this connection; ENOPROTOOPT: module not loaded. */
	if (errno != ENOENT && errno != ENOPROTOOPT)
		perror("getsockopt(TOA_SO_GET_LOOKUP)");

	/* With an IPv4 TOA option the module has already rewritten the peer address. */
	if (getpeername(fd, (struct sockaddr *)&ss, &sslen) < 0)
		return -1;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, buflen, "%s:%u", host, ntohs(sin->sin_port));
	} else {
		/* Dual-stack listener: an IPv4 client shows as ::ffff:a.b.c.d. */
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(buf, buflen, "[%s]:%u", host, ntohs(sin6->sin6_port));
	}
	return 0;
}

static int listen_on(int family, uint16_t port)
{
	int one = 1, fd = socket(family, SOCK_STREAM, 0);
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(port),
				   .sin6_addr = IN6ADDR_ANY_INIT };
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if ((family == AF_INET6 ? bind(fd, (struct sockaddr *)&a6, sizeof(a6)) :
				  bind(fd, (struct sockaddr *)&a4, sizeof(a4))) < 0 ||
	    listen(fd, 64) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int self_test(void)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	char text[INET6_ADDRSTRLEN + 16];
	int lfd = listen_on(AF_INET, 0), cfd, sfd, kind;

	if (lfd < 0 || getsockname(lfd, (struct sockaddr *)&a, &alen) < 0) {
		perror("listen");
		return 1;
	}
	cfd = socket(AF_INET, SOCK_STREAM, 0);
	if (cfd < 0 || connect(cfd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("connect");
		return 1;
	}
	sfd = accept(lfd, NULL, NULL);
	if (sfd < 0) {
		perror("accept");
		return 1;
	}
	kind = real_peer(sfd, text, sizeof(text));
	printf("self-test: peer %s (%s)\n", text, kind == 1 ? "NAT64" : "getpeername");
	/* A loopback connection carries no TOA option: the fallback must report 127.0.0.1. */
	if (kind != 0 || strncmp(text, "127.0.0.1:", 10) != 0) {
		fprintf(stderr, "self-test: expected 127.0.0.1 from getpeername\n");
		return 1;
	}
	close(sfd);
	close(cfd);
	close(lfd);
	return 0;
}

int main(int argc, char **argv)
{
	char text[INET6_ADDRSTRLEN + 16];
	int lfd;

	if (argc == 2 && strcmp(argv[1], "--self-test") == 0)
		return self_test();
	if (argc != 2) {
		fprintf(stderr, "usage: %s PORT | --self-test\n", argv[0]);
		return 2;
	}
	lfd = listen_on(AF_INET6, (uint16_t)atoi(argv[1]));
	if (lfd < 0) {
		perror("listen");
		return 1;
	}
	for (;;) {
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			continue;
		if (real_peer(fd, text, sizeof(text)) >= 0)
			printf("client %s\n", text);
		fflush(stdout);
		close(fd);
	}
}
