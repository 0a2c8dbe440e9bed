"""
Get a customer photo using the OnSite API.
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

customer_id = 15
customer_photo_url = 'http://%s:%d/api/customers/%d/customer_photo/' % (ONSITE_HOST, ONSITE_PORT, customer_id)
logout_url = 'http://%s:%d/api/sessions/current/logout/' % (ONSITE_HOST, ONSITE_PORT)

# Setup a session for the http request.
session = requests.Session()
session.auth = (ONSITE_USERNAME, ONSITE_PASSWORD)
session.headers.update({
    'user-agent': '%s/%s' % (APP_ID, APP_VERSION),
    'x-pappid': APP_PRIVATE_ID})
session.verify = False
session.stream = True

# Send the request to get a product photo.
with session.get(customer_photo_url) as response:
    
    # Assert that the request was successful.
    assert response.status_code == 200
    
    # Save the photo to disk.
    with open('customer-photo.jpg', 'wb') as photo:
        for raw_data in response.iter_content(chunk_size=1024):
            photo.write(raw_data)
    
    print('Downloaded customer-photo.jpg')

# Log out.
logout_response = session.post(logout_url)
assert logout_response.status_code == 204
