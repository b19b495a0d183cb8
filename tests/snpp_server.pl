#!/usr/bin/perl
# A third-party SNPP server for tests/test_snpp.py: Net::SNPP::Server (Debian package
# libnet-snpp-perl), which firegrid did not write, so the client is checked against
# someone else's reading of RFC 1861 and not only against our own simulator.
#
# Usage: perl tests/snpp_server.pl PORT
#
# Listens on 127.0.0.1:PORT (the module binds to the loopback address unless told
# otherwise), serves one client at a time until killed, and prints one JSON object per
# line on stdout, flushed at once:
#   {"event":"ready","port":PORT}                  once listening
#   {"event":"page","pager":ID,"message":TEXT,"two_way":0|1,"responses":{...}}
# per page accepted with SEND (TEXT decoded from UTF-8; DATA lines joined with "\n").
use strict;
use warnings;
use Encode qw(decode);
use IO::Handle;
use JSON::PP;
use Net::SNPP::Server;

my $port = shift @ARGV;
die "usage: $0 PORT\n" unless defined $port && $port =~ /^\d+$/;

binmode STDOUT;
STDOUT->autoflush(1);
my $json = JSON::PP->new->canonical->utf8;

# Timeout: the module answers "421 Timeout, Goodbye" after 10 idle seconds, so a
# stuck test client cannot block the next one for long.
my $server = Net::SNPP::Server->new(Port => $port, Timeout => 10);

$server->callback('write_log', sub { });    # its debug lines would only clutter stderr
$server->callback('process_page', sub {
    my ($pager, $page, $results) = @_;
    my $text = defined $page->{mess} ? decode('UTF-8', $page->{mess}) : '';
    print $json->encode({
        event     => 'page',
        pager     => "$pager->[0]",
        message   => $text,
        two_way   => ($page->{twoway} ? 1 : 0),
        responses => ($page->{responses} || {}),
    }), "\n";
    push @$results, [ $pager, $page ];
    return 1;    # true: SEND answers 250 (or 960 for a two-way page)
});

print $json->encode({ event => 'ready', port => $port + 0 }), "\n";

while (1) {
    my $client = $server->client();
    next unless $client;
    $server->handle_client($client);
    close($client);
}
