"""
Create a customer using the OnSite API.
"""
import requests
from xml.dom import minidom

# Customize these to your install.
ONSITE_HOST = '127.0.0.1'
ONSITE_PORT = 9630
ONSITE_USERNAME = 'lightspeed'
ONSITE_PASSWORD = 'admin'
APP_ID = 'com.lightspeed.onsite.demo'
APP_VERSION = '1.0'
APP_PRIVATE_ID = '12345678-90ab-cdef-1234-567890abcdef'

customers_url = 'http://%s:%d/api/customers/' % (ONSITE_HOST, ONSITE_PORT)
logout_url = 'http://%s:%d/api/sessions/current/logout/' % (ONSITE_HOST, ONSITE_PORT)

# This is the customer that will be created.
customer_xml = """
<customer>
    <name>
        <first>Jane</first>
        <last>Smith</last>
    </name>
    <phone_numbers>
        <phone_number id="1">
            <type>home</type>
            <number>613-555-5555</number>
        </phone_number>
    </phone_numbers>
</customer>
"""

# Create a session. This will persist cookies across all requests.
session = requests.Session()
session.auth = (ONSITE_USERNAME, ONSITE_PASSWORD)
session.headers.update({
    'user-agent': '%s/%s' % (APP_ID, APP_VERSION),
    'x-pappid': APP_PRIVATE_ID})
session.verify = False

# Send the request to create the customer.
post_response = session.post(customers_url, data=customer_xml)
assert post_response.status_code == 201

# Log out.
logout_response = session.post(logout_url)
assert logout_response.status_code == 204

# Get the response and print it.
response_xml = minidom.parseString(post_response.text)
print(response_xml.toprettyxml())
